// The public screen at a shop (/signage/<site>). Renders the view the gateway sends over
// server-sent events; every text goes in with textContent, never as HTML. When the gateway
// cannot be reached the last view stays up with its age ticking and a note that it is old.
"use strict";
(function () {
  var body = document.body;
  var site = body.getAttribute("data-site");
  var view = null;
  var offset = 0; // server clock minus this screen's clock, seconds
  var connected = true;
  var PRODUCTS = { diesel: ["Diesel", "Diesel"], petrol: ["Bensin", "Petrol"],
                   hvo: ["HVO", "HVO"], e85: ["E85", "E85"] };

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
    if (s < 172800) return [Math.floor(s / 3600) + " tim", Math.floor(s / 3600) + " h"];
    return [Math.floor(s / 86400) + " dygn", Math.floor(s / 86400) + " days"];
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
  function tile(id, cls, sv, en) {
    var t = document.getElementById(id);
    t.className = "tile " + (cls || "");
    put(t.querySelector(".v"), sv, en);
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
      put(up, "Ingen data ännu", "No data yet");
    } else {
      var a = age(now() - view.updated_ts);
      put(up, "Senast uppdaterad " + when(view.updated_ts) + " (för " + a[0] + " sedan)",
          "Last updated " + a[1] + " ago");
    }
    var st = isStale();
    body.classList.toggle("stale", st);
    stale.hidden = !st;
    if (st) {
      if (!view || !view.has_data) {
        put(stale, "INGEN KONTAKT med butikens system \u2013 läget är okänt.",
            "NO CONTACT with the shop's system \u2013 status unknown.");
      } else {
        var b = age(now() - view.updated_ts);
        put(stale, "INAKTUELLT \u2013 ingen kontakt med butikens system på " + b[0] +
            ". Uppgifterna nedan är senast kända, inte nuläge.",
            "STALE \u2013 no contact with the shop's system for " + b[1] +
            ". Figures below are the last known, not current.");
      }
    }
    var c = $("#conn");
    c.className = connected ? "" : "down";
    if (connected) c.textContent = "";
    else put(c, "Ingen kontakt med servern \u2013 visar senast kända läge",
             "No connection to the server \u2013 showing last known state");
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
      put(t.querySelector(".label"), "VIKTIGT MEDDELANDE", "IMPORTANT MESSAGE");
      t.querySelector(".msg-sv").textContent = severe.sv;
      t.querySelector(".msg-en").textContent = severe.en || "";
      t.querySelector(".src").textContent = "Från / From: " + severe.from + " \u00b7 " +
        when(severe.ts);
      t.setAttribute("data-crisis", severe.id);
    }
    var b = $("#banner");
    b.hidden = !lesser;
    if (lesser) {
      b.className = lesser.severity;
      b.querySelector(".msg-sv").textContent = lesser.sv;
      b.querySelector(".msg-en").textContent = lesser.en || "";
      b.querySelector(".src").textContent = "Från / From: " + lesser.from + " \u00b7 " +
        when(lesser.ts);
      b.setAttribute("data-crisis", lesser.id);
    }
  }

  function render(v) {
    view = v;
    offset = v.now - Date.now() / 1000;
    if (v.shop_open === true) tile("shop", "good", "ÖPPEN", "Open");
    else if (v.shop_open === false) tile("shop", "bad", "STÄNGD", "Closed");
    else tile("shop", "", "Okänt", "Unknown");
    if (v.power === "grid") tile("power", "good", "Nätström", "Grid power");
    else if (v.power === "backup") tile("power", "warn", "Reservkraft", "Backup power");
    else if (v.power === "none") tile("power", "bad", "Ingen ström", "No power");
    else tile("power", "", "Okänt", "Unknown");
    if (typeof v.hours_left === "number") {
      var h = v.hours_left < 10 ? v.hours_left.toFixed(1).replace(".", ",") : num(v.hours_left);
      tile("hours", v.hours_left < 24 ? "warn" : "good", h + " timmar", h + " hours");
    } else {
      tile("hours", "", "Okänt", "Unknown");
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
        put(li, names[0] + ": " + num(litres) + " liter", names[1] + " available");
      } else {
        put(li, names[0] + ": slut", names[1] + ": none for sale");
      }
      ul.appendChild(li);
    });
    if (!keys.length) {
      var li = document.createElement("li");
      put(li, "Okänt", "Unknown");
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
