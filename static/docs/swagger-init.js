// Starts Swagger UI on /docs from a file, not an inline script, so the page's CSP can forbid inline code.
"use strict";
(() => {
  const el = document.getElementById("docs");
  window.ui = SwaggerUIBundle({
    url: el.dataset.specUrl,
    dom_id: "#docs",
    deepLinking: true,
    docExpansion: "list",
    defaultModelsExpandDepth: 0,
    tryItOutEnabled: false,
    validatorUrl: null, // the public validator is a third-party request: never made
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
  });
})();
