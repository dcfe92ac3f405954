"""Hourly flight departures of one simulated year, with known drift: writes `data/raw/flight_delays.csv`.

    python data/generators/flight_delays.py [--out PATH] [--seed 2023]

A synthetic data set whose ground truth is written down here, so the platform can be
shown to find what is known to be in it. Eight origin airports, a daily timetable of
flights, and hourly weather per airport; each departure is `delayed` (1) or not (0)
by a logistic model of its schedule and the weather at its origin. What changes when
(the drift monitoring should see, month by month):

- **Seasons** shift the weather: cold, snowy, windy, foggy winters; hot summers with
  afternoon thunderstorms. The training window (January and February) sees only winter.
- **A new carrier**, `NK`, starts ten daily flights on 2023-07-01: a category the
  training data never saw, delayed about twice as often as the other carriers' flights
  at the same airports and hours.
- **Summer thunderstorms** change the delay relation. On a storm day (a quarter of the
  station-days in July and August, a few in May and September, none from October to
  April) a ground delay program holds all of an airport's departures, but the storm
  barely shows in the airport's own readings: its gauge records rain in about one in
  ten of the day's afternoon hours, and the wind rises a little. Storms favour hot
  days, while in winter the cold went with delays. So the weather columns explain
  delays far less well than in winter: a logistic regression trained on January and
  February scores a `roc_auc` of about 0.74 on its holdout, 0.67 in July and 0.63 in
  August; retraining on recent data is what monitoring should do about it.
- **Sensor outages** from 2023-04-01 on: now and then an airport's weather station
  goes silent for 2 to 30 hours, and all four weather columns of its departures are
  missing (the delay still depends on the weather that happened). Their share rises
  from under 1 % of departures in April to 6-11 % from August on. None before April,
  so the training window has no missing values at all.

The delay model, on the log-odds scale (`_delay_logit`): a base rate of about 20 %,
later departures more delayed (delays propagate through the day), carrier and origin
effects, precipitation, wind above 20 km/h and visibility below 8 km, snow or ice
(precipitation at or below 0 °C) strongly, larger aircraft a little (boarding), longer
flights a little less (schedule buffer), Fridays and Sundays a little more, and the
hidden storm term above (+3.0).

Deterministic: one seeded `numpy.random.Generator` (PCG64), values rounded to fixed
decimals and written with the `csv` module, so the same seed gives the same bytes.
`tests/unit/test_flight_delays_data.py` regenerates the file and compares its md5 with
the committed one. Only numpy is needed; nothing is downloaded.
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path

import numpy as np

SEED = 2023
YEAR = 2023
OUT = Path(__file__).resolve().parents[1] / "raw" / "flight_delays.csv"
COLUMNS = [
    "scheduled_departure", "dep_hour", "day_of_week", "distance", "seats", "carrier", "origin",
    "temperature", "wind_speed", "precipitation", "visibility", "delayed",
]  # fmt: skip

NEW_CARRIER = "NK"
NEW_CARRIER_FROM = date(YEAR, 7, 1)
OUTAGES_FROM = date(YEAR, 4, 1)
STORM_HOURS = range(13, 21)
FLIGHT_OPERATES = 0.95  # the share of timetabled flights that run on a given day


@dataclass(frozen=True)
class Airport:
    code: str
    mean_temp: float
    """Annual mean temperature, degrees Celsius."""
    temp_amplitude: float
    """Half the difference between the warmest and the coldest month."""
    wet_days: float
    """Chance of a frontal rain (or snow) day in mid-winter; half of it in mid-summer."""
    storm_days: float
    """Chance of a thunderstorm day in mid-summer; none in winter."""
    delay_effect: float
    """Log-odds added to every departure (congestion)."""


AIRPORTS = [
    Airport("ATL", 17.0, 10.0, 0.30, 0.45, 0.10),
    Airport("ORD", 10.0, 14.0, 0.35, 0.35, 0.35),
    Airport("DFW", 19.0, 11.0, 0.20, 0.35, 0.00),
    Airport("DEN", 10.0, 12.0, 0.25, 0.40, 0.15),
    Airport("LAX", 18.0, 4.0, 0.15, 0.02, -0.15),
    Airport("JFK", 13.0, 12.0, 0.35, 0.30, 0.40),
    Airport("SEA", 11.0, 7.0, 0.55, 0.05, -0.20),
    Airport("BOS", 11.0, 13.0, 0.35, 0.25, 0.20),
]
CARRIER_EFFECT = {"AA": 0.10, "DL": -0.50, "UA": 0.00, "WN": 0.30, "B6": 0.50, NEW_CARRIER: 1.00}
AIRCRAFT_SEATS = [50, 76, 128, 160, 180, 220]


@dataclass(frozen=True)
class Flight:
    carrier: str
    origin: int
    """Index into AIRPORTS."""
    hour: int
    minute: int
    distance: int
    seats: int


def _timetable(rng: np.random.Generator) -> list[Flight]:
    """Nine or ten flights a day out of each airport for the five established carriers, then NK's ten."""
    flights = []
    carriers = [c for c in CARRIER_EFFECT if c != NEW_CARRIER]
    for origin in range(len(AIRPORTS)):
        for _ in range(9 + int(rng.integers(0, 2))):
            flights.append(_flight(rng, str(carriers[int(rng.integers(0, len(carriers)))]), origin))
    for _ in range(10):
        flights.append(_flight(rng, NEW_CARRIER, int(rng.integers(0, len(AIRPORTS)))))
    return flights


def _flight(rng: np.random.Generator, carrier: str, origin: int) -> Flight:
    seats = AIRCRAFT_SEATS[int(rng.integers(0, len(AIRCRAFT_SEATS)))]
    # Small aircraft fly short legs; the distance in miles grows with the size.
    distance = int(150 + seats * 5 + rng.integers(0, 900))
    return Flight(carrier, origin, int(rng.integers(5, 23)), 5 * int(rng.integers(0, 12)), distance, seats)


@dataclass
class Weather:
    """Hourly weather per airport: arrays of shape (days, 24, airports)."""

    temperature: np.ndarray
    wind_speed: np.ndarray
    precipitation: np.ndarray
    visibility: np.ndarray
    storm_day: np.ndarray
    """(days, airports): a thunderstorm day near the airport (not a column: the hidden cause)."""
    outage: np.ndarray
    """Whether the airport's weather station reports nothing in that hour."""


def _season(days: int) -> np.ndarray:
    """+1 in mid-July, -1 in mid-January, per day of the year."""
    day_of_year = np.arange(days, dtype=float)
    return np.cos(2 * math.pi * (day_of_year - 198) / 365)


def _weather(rng: np.random.Generator, days: int) -> Weather:
    n = len(AIRPORTS)
    season = _season(days)[:, None, None]
    summer = np.clip(season, 0, None)
    winter = np.clip(-season, 0, None)
    hours = np.arange(24, dtype=float)[None, :, None]
    mean = np.array([a.mean_temp for a in AIRPORTS])[None, None, :]
    amplitude = np.array([a.temp_amplitude for a in AIRPORTS])[None, None, :]

    # A day's temperature anomaly lingers (AR(1) over days), plus the daily cycle peaking at 15:00.
    anomaly = np.zeros((days, n))
    shocks = rng.normal(0, 2.0, size=(days, n))
    for d in range(1, days):
        anomaly[d] = 0.7 * anomaly[d - 1] + shocks[d]
    daily_cycle = 4.0 * np.cos(2 * math.pi * (hours - 15) / 24)
    temperature = mean + amplitude * season + daily_cycle + anomaly[:, None, :] + rng.normal(0, 0.8, (days, 24, n))

    # Fronts: a wet spell of a few hours, more often in winter, light but long.
    wet_chance = np.array([a.wet_days for a in AIRPORTS])[None, :] * (0.4 + 0.8 * winter[:, 0, :])
    wet_day = rng.random((days, n)) < wet_chance
    wet_start = rng.integers(0, 24, size=(days, n))
    wet_length = rng.integers(4, 17, size=(days, n))
    in_front = (hours >= wet_start[:, None, :]) & (hours < (wet_start + wet_length)[:, None, :]) & wet_day[:, None, :]
    frontal_rain = in_front * rng.exponential(1.2, size=(days, 24, n))

    # Thunderstorms: summer afternoons; the gauge catches rain in only some of a storm's hours.
    # Hot days breed storms: the chance grows with the day's temperature anomaly.
    storm_chance = np.array([a.storm_days for a in AIRPORTS])[None, :] * summer[:, 0, :] ** 2
    storm_chance = storm_chance * np.clip(1 + anomaly / 3, 0, 2)
    storm_day = rng.random((days, n)) < storm_chance
    afternoon = (hours >= STORM_HOURS.start) & (hours < STORM_HOURS.stop)
    storm = storm_day[:, None, :] & afternoon & (rng.random((days, 24, n)) < 0.7)
    storm_rain = storm * (rng.random((days, 24, n)) < 0.15) * rng.exponential(5.0, size=(days, 24, n))
    precipitation = frontal_rain + storm_rain

    wind_speed = 10 + 8 * winter + np.abs(rng.normal(0, 6, (days, 24, n))) + 4 * storm + 6 * in_front
    fog = (winter > 0.5) & (hours >= 5) & (hours <= 9) & (rng.random((days, 24, n)) < 0.25)
    visibility = 16 - 9 * np.minimum(1, precipitation / 4) - 10 * fog + rng.normal(0, 0.5, (days, 24, n))

    return Weather(
        temperature=temperature,
        wind_speed=np.maximum(wind_speed, 0),
        precipitation=precipitation,
        visibility=np.clip(visibility, 0.2, 16),
        storm_day=storm_day,
        outage=_outages(rng, days, n),
    )


def _outages(rng: np.random.Generator, days: int, n: int) -> np.ndarray:
    """Station outages of 2 to 30 hours from April on, starting more often as the months pass."""
    start = (OUTAGES_FROM - date(YEAR, 1, 1)).days
    outage = np.zeros((days * 24, n), dtype=bool)
    for d in range(start, days):
        # From 3 % of station-days in April to about 15 % in December.
        chance = 0.03 + 0.12 * (d - start) / (days - start)
        for a in range(n):
            if rng.random() < chance:
                begin = d * 24 + int(rng.integers(0, 24))
                outage[begin : begin + int(rng.integers(2, 31)), a] = True
    return outage.reshape(days, 24, n)


def _delay_logit(
    flight: Flight, weekday: int, temp: float, wind: float, rain: float, visibility: float, storm: bool
) -> float:
    """The log-odds that a departure is delayed, from its schedule and its origin's weather in that hour."""
    logit = -2.6 + 0.15 * (flight.hour - 12)
    logit += CARRIER_EFFECT[flight.carrier] + AIRPORTS[flight.origin].delay_effect
    logit += 0.6 * min(rain, 5.0) + 0.08 * max(0.0, wind - 20) + 0.4 * max(0.0, 8 - visibility)
    if rain > 0 and temp <= 0:
        logit += 2.5  # snow or ice: de-icing queues
    logit += 0.1 * max(0.0, -temp)
    logit += 0.003 * (flight.seats - 150) - 0.0002 * (flight.distance - 1200)
    logit += 0.25 if weekday in (4, 6) else 0.0
    if storm:
        logit += 3.0  # a ground delay program for the day, rain at the gauge or not
    return logit


def generate(seed: int = SEED) -> str:
    """The whole CSV as text, one row per departure in time order."""
    rng = np.random.default_rng(seed)
    first = date(YEAR, 1, 1)
    days = (date(YEAR + 1, 1, 1) - first).days
    flights = sorted(_timetable(rng), key=lambda f: (f.hour, f.minute, f.origin, f.carrier, f.distance))
    weather = _weather(rng, days)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    for d in range(days):
        day = first + timedelta(days=d)
        operates = rng.random(len(flights)) < FLIGHT_OPERATES
        draws = rng.random(len(flights))
        for flight, runs, draw in zip(flights, operates, draws, strict=True):
            if not runs or (flight.carrier == NEW_CARRIER and day < NEW_CARRIER_FROM):
                continue
            writer.writerow(_row(flight, day, d, weather, float(draw)))
    return out.getvalue()


def _row(flight: Flight, day: date, d: int, weather: Weather, draw: float) -> list[object]:
    h, a = flight.hour, flight.origin
    temp = round(float(weather.temperature[d, h, a]), 1)
    wind = round(float(weather.wind_speed[d, h, a]), 1)
    rain = round(float(weather.precipitation[d, h, a]), 1)
    visibility = round(float(weather.visibility[d, h, a]), 1)
    logit = _delay_logit(flight, day.weekday(), temp, wind, rain, visibility, bool(weather.storm_day[d, a]))
    delayed = int(draw < 1 / (1 + math.exp(-logit)))
    # The delay depends on the weather that happened; an outage only hides it from the data.
    observed: list[object] = ["", "", "", ""] if weather.outage[d, h, a] else [temp, wind, rain, visibility]
    departure = datetime(day.year, day.month, day.day, flight.hour, flight.minute)
    return [
        departure.strftime("%Y-%m-%d %H:%M:%S"), flight.hour, day.weekday(), flight.distance, flight.seats,
        flight.carrier, AIRPORTS[a].code, *observed, delayed,
    ]  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT, help=f"where to write the CSV (default {OUT})")
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args(argv)
    text = generate(args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8", newline="")
    print(f"{args.out}: {text.count(chr(10)) - 1} rows, {len(text.encode())} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
