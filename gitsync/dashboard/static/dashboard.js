// The dashboard's only script: each element with data-events follows a server-sent event stream and takes the
// server-rendered HTML it sends, so a rollout's step shows without a reload. Without JavaScript the pages
// still work; they are just not live.
"use strict";
document.querySelectorAll("[data-events]").forEach(function (element) {
  var source = new EventSource(element.getAttribute("data-events"));
  var update = function (event) {
    element.innerHTML = JSON.parse(event.data).html;
    element.setAttribute("data-updated", String(Date.now()));
  };
  source.addEventListener("live", update);
  source.addEventListener("grid", update);
  source.addEventListener("open", function () { document.body.classList.remove("offline"); });
  source.addEventListener("error", function () { document.body.classList.add("offline"); });
});
