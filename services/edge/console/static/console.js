/* mcpgw console: the few behaviours the pages need beyond links and forms. */
"use strict";
(function () {
  // htmx requests that change state carry the session's CSRF token.
  document.addEventListener("htmx:configRequest", function (event) {
    var csrf = document.body.dataset.csrf;
    if (csrf) { event.detail.headers["X-CSRF-Token"] = csrf; }
  });

  document.addEventListener("click", function (event) {
    var button = event.target.closest("[data-copy]");
    if (!button) { return; }
    var field = document.getElementById(button.dataset.copy);
    var status = document.getElementById("copy-status");
    var done = function (text) { if (status) { status.textContent = text; } };
    field.select();
    if (navigator.clipboard && navigator.clipboard.writeText) {
      navigator.clipboard.writeText(field.value).then(
        function () { done("Copied to the clipboard."); },
        function () { done("Select the secret and copy it (the browser refused the clipboard)."); }
      );
    } else {
      done("Select the secret and copy it.");
    }
  });

  document.addEventListener("submit", function (event) {
    var message = event.target.dataset.confirm;
    if (message && !window.confirm(message)) { event.preventDefault(); }
  });

  var timer = null;
  document.addEventListener("change", function (event) {
    var target = event.target.dataset.live;
    if (!target) { return; }
    if (timer) { clearInterval(timer); timer = null; }
    if (event.target.checked) {
      timer = setInterval(function () {
        htmx.ajax("GET", window.location.pathname + window.location.search, { target: "#" + target, swap: "innerHTML" });
      }, 3000);
    }
  });
})();
