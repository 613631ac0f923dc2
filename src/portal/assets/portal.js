// Sluice tenant portal: the only script. It exchanges a link's login code (from the URL
// fragment) for a session, asks before destructive actions, and tells an embedding page
// (svix-react's AppPortal or a plain iframe) how tall the portal is.
(function () {
  "use strict";
  var login = document.getElementById("login-form");
  if (login) {
    var m = /[#&]key=([A-Za-z0-9_-]+)/.exec(window.location.hash);
    // The fragment never reaches a server; remove it so it stays out of history too.
    history.replaceState(null, "", window.location.pathname + window.location.search);
    if (m) {
      login.elements.key.value = m[1];
      // Svix's deep link: ?next=/endpoints/<id> opens that page after signing in.
      var q = new URLSearchParams(window.location.search);
      login.elements.next.value = q.get("next") || "";
      // Svix's per-link look; the server keeps what it validates.
      q.delete("next");
      login.elements.theme.value = q.toString();
      login.submit();
    } else {
      document.getElementById("login-status").textContent = "This link holds no login key.";
    }
  }
  document.addEventListener("submit", function (e) {
    var q = e.target.getAttribute("data-confirm");
    if (q && !window.confirm(q)) e.preventDefault();
  });
  function height() {
    if (window.parent === window) return;
    var h = document.documentElement.scrollHeight;
    window.parent.postMessage({ type: "svix.iframe-resizer-height", payload: { height: h } }, "*");
  }
  window.addEventListener("load", height);
  window.addEventListener("resize", height);
  height();
})();
