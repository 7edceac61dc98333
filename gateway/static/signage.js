// The public screen at a shop (/signage/<site>). Renders the view the gateway sends over
// server-sent events; every text goes in with textContent, never as HTML. When the gateway
// cannot be reached the last view stays up with its age ticking and a note that it is old.
// Its words come from the text catalogue (config/texts.toml, `signage.*`, `product.*`), which
// the page hands over in data-texts: [Swedish, English] per key, {name} filled in here.
"use strict";
(function () {
  var body = document.body;
  var site = body.getAttribute("data-site");
  var view = null;
  var offset = 0; // server clock minus this screen's clock, seconds
  var connected = true;
  var T = {};
  try { T = JSON.parse(body.getAttribute("data-texts")) || {}; } catch (err) { T = {}; }
  var PRODUCTS = T.product || {};
  var UNIT = T.unit || {};

  // [Swedish, English] for `key`, with {name} placeholders filled from `vals` (per language
  // where a value is itself a pair)
  function tx(key, vals) {
    var pair = T[key] || [key, key];
    return [0, 1].map(function (i) {
      return pair[i].replace(/\{(\w+)\}/g, function (m, name) {
        if (!vals || !(name in vals)) return m;
        var v = vals[name];
        return Array.isArray(v) ? v[i] : v;
      });
    });
  }

  function $(sel) { return document.querySelector(sel); }
  function now() { return Date.now() / 1000 + offset; }
  function two(n) { return (n < 10 ? "0" : "") + n; }
  function clock(ts) {
    var d = new Date(ts * 1000);
    return two(d.getHours()) + ":" + two(d.getMinutes());
  }
  function day(ts) {
    var d = new Date(ts * 1000);
    return d.getFullYear() + "-" + two(d.getMonth() + 1) + "-" + two(d.getDate());
  }
  function when(ts) {
    return (day(ts) === day(now()) ? "" : day(ts) + " ") + clock(ts);
  }
  function age(s) {
    s = Math.max(0, Math.round(s));
    if (s < 120) return [s + " s", s + " s"];
    if (s < 7200) return [Math.floor(s / 60) + " min", Math.floor(s / 60) + " min"];
    var h = UNIT.hours || ["h", "h"], d = UNIT.days || ["d", "d"];
    if (s < 172800) return [Math.floor(s / 3600) + " " + h[0], Math.floor(s / 3600) + " " + h[1]];
    return [Math.floor(s / 86400) + " " + d[0], Math.floor(s / 86400) + " " + d[1]];
  }
  function num(v) {
    return Math.round(v).toString().replace(/\B(?=(\d{3})+(?!\d))/g, "\u00a0");
  }
  // Swedish value with its English translation on a line of its own
  function put(el, sv, en) {
    el.textContent = "";
    el.appendChild(document.createTextNode(sv));
    if (en) {
      var s = document.createElement("span");
      s.className = "en";
      s.textContent = en;
      el.appendChild(s);
    }
  }
  function putText(el, pair) { put(el, pair[0], pair[1]); }
  function tile(id, cls, pair) {
    var t = document.getElementById(id);
    t.className = "tile " + (cls || "");
    putText(t.querySelector(".v"), pair);
  }

  function isStale() {
    if (!view || !view.has_data) return true;
    if (view.stale) return true;
    return now() - view.updated_ts > view.stale_after_s;
  }

  function renderAge() {
    var up = $("#updated");
    var stale = $("#stale");
    if (!view || !view.has_data) {
      putText(up, tx("no_data_yet"));
    } else {
      putText(up, tx("updated", { when: when(view.updated_ts), age: age(now() - view.updated_ts) }));
    }
    var st = isStale();
    body.classList.toggle("stale", st);
    stale.hidden = !st;
    if (st) {
      if (!view || !view.has_data) {
        putText(stale, tx("no_contact"));
      } else {
        putText(stale, tx("stale", { age: age(now() - view.updated_ts) }));
      }
    }
    var c = $("#conn");
    c.className = connected ? "" : "down";
    if (connected) c.textContent = "";
    else putText(c, tx("server_down"));
  }

  function source(m) {
    var from = tx("from");
    return from[0] + " / " + from[1] + ": " + m.from + " \u00b7 " + when(m.ts);
  }

  function renderMessages(msgs) {
    var severe = null, lesser = null;
    for (var i = 0; i < msgs.length; i++) {
      var m = msgs[i];
      if (m.expires && m.expires <= now()) continue;
      if (m.severity === "severe" && !severe) severe = m;
      else if (m.severity !== "severe" && !lesser) lesser = m;
    }
    var t = $("#takeover");
    t.hidden = !severe;
    if (severe) {
      putText(t.querySelector(".label"), tx("important"));
      t.querySelector(".msg-sv").textContent = severe.sv;
      t.querySelector(".msg-en").textContent = severe.en || "";
      t.querySelector(".src").textContent = source(severe);
      t.setAttribute("data-crisis", severe.id);
    }
    var b = $("#banner");
    b.hidden = !lesser;
    if (lesser) {
      b.className = lesser.severity;
      b.querySelector(".msg-sv").textContent = lesser.sv;
      b.querySelector(".msg-en").textContent = lesser.en || "";
      b.querySelector(".src").textContent = source(lesser);
      b.setAttribute("data-crisis", lesser.id);
    }
  }

  function render(v) {
    view = v;
    offset = v.now - Date.now() / 1000;
    if (v.shop_open === true) tile("shop", "good", tx("open"));
    else if (v.shop_open === false) tile("shop", "bad", tx("closed"));
    else tile("shop", "", tx("unknown"));
    var POWER_CLASS = { grid: "good", backup: "warn", none: "bad" };
    if (POWER_CLASS[v.power]) tile("power", POWER_CLASS[v.power], tx("power." + v.power));
    else tile("power", "", tx("unknown"));
    if (typeof v.hours_left === "number") {
      var h = v.hours_left < 10 ? v.hours_left.toFixed(1).replace(".", ",") : num(v.hours_left);
      tile("hours", v.hours_left < 24 ? "warn" : "good", tx("hours", { h: h }));
    } else {
      tile("hours", "", tx("unknown"));
    }
    var ul = document.querySelector("#fuel .v");
    ul.textContent = "";
    var keys = Object.keys(v.fuel_for_sale || {}).sort();
    var any = false;
    keys.forEach(function (k) {
      var li = document.createElement("li");
      var names = PRODUCTS[k] || [k, k];
      var litres = v.fuel_for_sale[k];
      if (typeof litres === "number" && litres > 0) {
        any = true;
        putText(li, tx("fuel_left", { name: names, litres: num(litres) }));
      } else {
        putText(li, tx("fuel_none", { name: names }));
      }
      ul.appendChild(li);
    });
    if (!keys.length) {
      var li = document.createElement("li");
      putText(li, tx("unknown"));
      ul.appendChild(li);
    }
    document.getElementById("fuel").className = "tile " + (keys.length ? (any ? "good" : "bad") : "");
    renderMessages(v.messages || []);
    renderAge();
  }

  try {
    render(JSON.parse(body.getAttribute("data-initial")));
  } catch (err) { /* the stream fills the screen */ }

  var es = new EventSource("/signage/" + encodeURIComponent(site) + "/events");
  es.addEventListener("state", function (ev) {
    connected = true;
    try { render(JSON.parse(ev.data)); } catch (err) { /* keep the last good view */ }
  });
  es.addEventListener("open", function () { connected = true; renderAge(); });
  es.addEventListener("error", function () { connected = false; renderAge(); });
  setInterval(function () {
    renderAge();
    if (view) renderMessages(view.messages || []);
  }, 5000);
})();
