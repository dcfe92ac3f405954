// Airflow shows this page in a sandboxed iframe without `allow-popups` or
// `allow-top-navigation`, so a plain target=_blank link (MLflow) or target=_top link
// (Airflow's own pages, such as a task's approve/reject form) would be blocked. The
// frame is same-origin with the Airflow UI, so follow such links through an anchor in
// the top document instead: a new tab for _blank, the whole Airflow window for _top.
document.addEventListener("click", (event) => {
  const link = event.target.closest("a[target=_blank], a[target=_top]");
  if (!link || window.top === window) return;
  try {
    const doc = window.top.document;
    const proxy = doc.createElement("a");
    proxy.href = link.getAttribute("href");
    if (link.target === "_blank") {
      proxy.target = "_blank";
      proxy.rel = "noopener";
    }
    doc.body.appendChild(proxy);
    proxy.click();
    proxy.remove();
    event.preventDefault();
  } catch (err) {
    // Not same-origin (a proxy in front?): let the browser try the link itself.
  }
});
