// Paddock dashboard: live logs over server-sent events, and a quiet
// refresh of the overview. Every string from the server goes into the page
// as text (textContent), never as markup.
"use strict";
(function () {
  var MAX_LINES = 1000;

  function follow() {
    var list = document.getElementById("log-lines");
    var pick = document.getElementById("log-process");
    var status = document.getElementById("log-status");
    if (!list || !pick) return;
    var app = pick.getAttribute("data-app");
    var source = null;

    function say(text) { status.textContent = text; }

    function add(line) {
      var atEnd = list.scrollTop + list.clientHeight >= list.scrollHeight - 4;
      var li = document.createElement("li");
      if (line.stream === "err") li.className = "err";
      if (line.stream === "paddock") li.className = "paddock";
      var t = document.createElement("span");
      t.className = "t";
      t.textContent = (line.time || "").replace("T", " ").replace(/\.\d+/, "").replace("Z", "") + " ";
      var s = document.createElement("span");
      s.className = "s";
      s.textContent = (line.source || "") + " ";
      var x = document.createElement("span");
      x.className = "x";
      x.textContent = line.text || "";
      li.appendChild(t);
      li.appendChild(s);
      li.appendChild(x);
      list.appendChild(li);
      while (list.childNodes.length > MAX_LINES) list.removeChild(list.firstChild);
      if (atEnd) list.scrollTop = list.scrollHeight;
    }

    function open() {
      if (source) source.close();
      var url = "/apps/" + encodeURIComponent(app) + "/logs/stream";
      if (pick.value) url += "?process=" + encodeURIComponent(pick.value);
      source = new EventSource(url);
      say("connecting…");
      source.addEventListener("hello", function () {
        while (list.firstChild) list.removeChild(list.firstChild);
        say("live");
      });
      source.addEventListener("line", function (ev) {
        try { add(JSON.parse(ev.data)); } catch (e) { /* a line that is not JSON is skipped */ }
      });
      source.addEventListener("failure", function (ev) {
        var msg = "failed";
        try { msg = "failed: " + JSON.parse(ev.data).message; } catch (e) { /* keep the short message */ }
        say(msg);
        source.close();
      });
      source.onerror = function () {
        if (source.readyState !== EventSource.CLOSED) say("reconnecting…");
      };
    }

    pick.addEventListener("change", open);
    open();
  }

  // The overview reloads itself every few seconds, unless someone is
  // typing or the tab is hidden.
  function refresh() {
    var el = document.querySelector("[data-refresh]");
    if (!el) return;
    var every = parseInt(el.getAttribute("data-refresh"), 10) * 1000;
    if (!(every > 0)) return;
    setInterval(function () {
      var a = document.activeElement;
      if (document.hidden || (a && /^(INPUT|SELECT|TEXTAREA)$/.test(a.tagName))) return;
      window.location.reload();
    }, every);
  }

  document.addEventListener("DOMContentLoaded", function () {
    follow();
    refresh();
  });
})();
