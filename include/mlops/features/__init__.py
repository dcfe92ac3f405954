"""Feature store: Feast behind one module (store.py); everything else here is plain pandas."""
