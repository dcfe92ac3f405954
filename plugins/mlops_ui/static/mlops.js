// Airflow shows this page in a sandboxed iframe without `allow-popups`, so a plain
// target=_blank link to MLflow would be blocked. The frame is same-origin with the
// Airflow UI, so open such links through an anchor in the top document instead.
document.addEventListener("click", (event) => {
  const link = event.target.closest("a[target=_blank]");
  if (!link || window.top === window) return;
  try {
    const doc = window.top.document;
    const proxy = doc.createElement("a");
    proxy.href = link.getAttribute("href");
    proxy.target = "_blank";
    proxy.rel = "noopener";
    doc.body.appendChild(proxy);
    proxy.click();
    proxy.remove();
    event.preventDefault();
  } catch (err) {
    // Not same-origin (a proxy in front?): let the browser try the link itself.
  }
});
