// Starts ReDoc on /redoc from a file, not an inline script (the page's CSP forbids inline code).
"use strict";
(() => {
  const el = document.getElementById("redoc");
  Redoc.init(el.dataset.specUrl, { hideDownloadButton: false, expandResponses: "200,201", nativeScrollbars: true }, el);
})();
