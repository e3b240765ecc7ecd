// The p2pstore monitor page: fetch /api/servers about every interval and lay
// it out again, without reloading the page; say so when the data gets stale.
//
// Everything shown comes from the nodes and is untrusted: it only ever goes
// into the page as text (textContent, text nodes, attribute values), never
// as markup.
"use strict";

(function () {
  const root = document.getElementById("monitor");
  if (!root) {
    return;
  }
  const api = root.dataset.api;
  const interval = Number(root.dataset.interval) * 1000;
  const staleAfter = Number(root.dataset.staleAfter) * 1000;
  const notice = document.getElementById("stale");

  // When the data shown was fetched, how old the monitor said it was then,
  // and the monitor's own stale notice, if any.
  let fetchedAt = Date.now();
  let ageThen = Number(root.dataset.age) * 1000;
  let monitorNotice = root.dataset.staleText || null;
  let failure = null;

  // Chart images by server and type, kept across refreshes so that they do
  // not flicker; each gets a new src only when its chart changed.
  const charts = new Map();
  for (const img of document.querySelectorAll("#nodes img.chart")) {
    const card = img.closest(".node");
    charts.set(card.dataset.index + "|" + img.dataset.type, img);
  }
  // The history charts likewise, by server and what they show.
  const histories = new Map();
  for (const img of document.querySelectorAll("#history img.history-chart")) {
    histories.set(img.closest("tr").dataset.index + "|" + img.dataset.what, img);
  }

  // el("td", {class: "num"}, "12", child, ...): an element with attributes
  // and children; strings become text nodes.
  function el(tag, attributes, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attributes || {})) {
      if (value !== null && value !== undefined && value !== false) {
        node.setAttribute(name, value === true ? "" : String(value));
      }
    }
    for (const child of children) {
      if (child === null || child === undefined || child === false) {
        continue;
      }
      node.append(typeof child === "object" ? child : String(child));
    }
    return node;
  }

  function value(v) {
    return v === null || v === undefined ? "—" : String(v);
  }

  // A count with thousands separators, as the page's template writes it.
  function count(v) {
    return v === null || v === undefined ? "—" : v.toLocaleString("en-US");
  }

  function badge(server) {
    return el("span", { class: "badge " + server.badge }, server.state);
  }

  // Per --export destination: its backlog, then what is wrong, if anything.
  function exportCell(exports) {
    if (exports === null || exports === undefined) {
      return ["—"];
    }
    return exports.map((e) =>
      el(
        "div",
        { class: "destination", title: e.url },
        exports.length > 1 ? el("span", { class: "sub" }, e.name) : null,
        e.backlog,
        e.trouble ? el("div", { class: "why trouble", title: e.error }, e.trouble) : null,
        e.note ? el("div", { class: "why" }, e.note) : null,
        e.dead_letters ? el("div", { class: "why warning" }, e.dead_letters) : null
      )
    );
  }

  // The column each cell of a server's row is under, for the narrow
  // layout, where each row is a card of labelled cells.
  const serverLabels = ["Server", "State", "Node", "Uptime", "Own readings", "Held for others",
    "Sensors connected", "Rejected lines", "Disk", "Export", "Peer links"];

  function serverRow(s) {
    const row = serverCells(s);
    Array.from(row.children).forEach((cell, n) => cell.setAttribute("data-label", serverLabels[n]));
    return row;
  }

  function serverCells(s) {
    let links = "—";
    if (s.links_up !== null) {
      links = [
        el("span", { class: "up" }, s.links_up + " up"),
        " · ",
        el("span", { class: s.links_down ? "down" : "none" }, s.links_down + " down"),
      ];
      if (s.links_gone) {
        links.push(" · ", el("span", { class: "gone" }, s.links_gone + " gone"));
      }
      if (s.links_trouble) {
        links.push(" · ", el("span", { class: "trouble" }, s.links_trouble + " in trouble"),
                   el("div", { class: "why" }, s.trouble));
      }
      if (s.lag) {
        links.push(el("div", { class: "why lag" }, s.lag));
      }
    }
    return el(
      "tr",
      { class: "server", "data-index": s.index, "data-state": s.state },
      el("td", { class: "address" }, s.address),
      el(
        "td",
        { class: "state" },
        badge(s),
        s.message && el("div", { class: "why" }, s.message),
        s.last_answer && el("div", { class: "why" }, s.last_answer),
        ...(s.warnings || []).map((w) => el("div", { class: "why warning" }, w))
      ),
      el("td", { class: "mono", title: s.node_id }, value(s.node_short)),
      el("td", { class: "nw" }, value(s.uptime)),
      el("td", { class: "num" }, count(s.own_readings), s.rate ? el("div", { class: "why rate" }, s.rate) : null),
      el("td", { class: "num" }, count(s.held_for_others)),
      el(
        "td",
        { class: "num" },
        value(s.sensors_connected),
        s.sensor_names ? el("div", { class: "why names" }, s.sensor_names) : null,
        s.sensors_unterminated ? el("div", { class: "why" }, s.sensors_unterminated + " without line ends") : null
      ),
      el("td", { class: "num" }, count(s.rejected_lines)),
      el(
        "td",
        { class: "num disk" + (s.disk_full ? " full" : "") },
        ...(s.disk_parts.length
          ? s.disk_parts.flatMap((part, n) => [n ? " " : null, el("span", { class: "nw" }, part)])
          : ["—"]),
        s.disk_left ? el("div", { class: "why" }, s.disk_left) : null
      ),
      el("td", { class: "export" }, ...exportCell(s.exports)),
      el("td", { class: "links" }, ...[].concat(links))
    );
  }

  function matrixTable(matrix) {
    const head = el(
      "tr",
      {},
      el("th", {}, "Origin"),
      el("th", { class: "num" }, "Readings"),
      ...matrix.holders.map((h) =>
        el("th", { class: "holder" }, h.address, h.node_short && el("span", { class: "mono sub" }, h.node_short))
      ),
      el("th", {}, "Held by")
    );
    const rows = matrix.rows.map((row) =>
      el(
        "tr",
        { class: row.short ? "short" : "ok" },
        el(
          "th",
          { class: "origin" },
          el("a", { class: "mono", href: row.url, title: row.origin + ": its page" }, row.origin_short),
          row.address && " ",
          row.address && el("span", { class: "sub" }, row.address)
        ),
        el("td", { class: "num" }, count(row.total)),
        ...row.cells.map((cell) =>
          el(
            "td",
            { class: "cell " + cell.state + (cell.own ? " own" : "") },
            cell.state === "unknown" ? "?" : count(cell.have),
            cell.lacking ? " " : null,
            cell.lacking ? el("span", { class: "lack" }, "−" + count(cell.lacking)) : null,
            ...(cell.state === "unknown" ? [] : cell.ranges.map((r) => el("span", { class: "range" }, r)))
          )
        ),
        el("td", { class: "held" }, row.held_by + " of " + matrix.monitored)
      )
    );
    if (rows.length === 0) {
      rows.push(
        el(
          "tr",
          {},
          el("td", { class: "empty", colspan: matrix.holders.length + 3 }, "No server has answered with its readings yet.")
        )
      );
    }
    return [el("thead", {}, head), el("tbody", {}, ...rows)];
  }

  // The image kept in `kept` under `key` (made with `attributes` the first
  // time), given a new src only when its chart changed.
  function keptImage(kept, key, attributes, url, alt) {
    let img = kept.get(key);
    if (!img) {
      img = el("img", attributes);
      kept.set(key, img);
    }
    if (img.getAttribute("src") !== url) {
      img.setAttribute("src", url);
    }
    img.setAttribute("alt", alt);
    return img;
  }

  function chartImage(s, c) {
    return keptImage(charts, s.index + "|" + c.type,
      { class: "chart", "data-type": c.type, width: c.width, height: c.height }, c.url,
      c.type + ": last " + c.last + ", " + c.count + " values from " + c.min + " to " + c.max);
  }

  function historyImage(s, c) {
    return keptImage(histories, s.index + "|" + c.what,
      { class: "history-chart", "data-what": c.what, width: c.width, height: c.height }, c.url,
      s.address + ": " + c.alt + " over the last hour");
  }

  function historyRow(s) {
    const cells = s.history.length
      ? s.history.map((c) => el("td", {}, historyImage(s, c)))
      : [el("td", { class: "why", colspan: 2 }, "—")];
    return el("tr", { "data-index": s.index }, el("th", { class: "address" }, s.address), ...cells);
  }

  function peersTable(peers) {
    return el(
      "table",
      { class: "peers" },
      el("thead", {}, el("tr", {}, el("th", {}, "Peer"), el("th", {}, "Link"), el("th", {}, "Lacks"))),
      el(
        "tbody",
        {},
        ...peers.map((p) =>
          el(
            "tr",
            { class: "peer " + p.state },
            el("td", {}, p.name, p.node_short ? el("span", { class: "mono sub" }, p.node_short) : null),
            el("td", { class: "link" }, p.state, p.seen ? el("div", { class: "why" }, p.seen) : null),
            el("td", {}, p.lag)
          )
        )
      )
    );
  }

  function nodeCard(s) {
    const parts = [el("h3", {}, el("span", { class: "address" }, s.address), " ", badge(s))];
    if (!s.answered) {
      parts.push(el("p", { class: "why" }, (s.message || "Not checked yet.") + (s.last_answer ? "; " + s.last_answer : "")));
    } else {
      if (s.charts.length) {
        parts.push(el("div", { class: "charts" }, ...s.charts.map((c) => chartImage(s, c))));
      }
      if (s.peers.length) {
        parts.push(peersTable(s.peers));
      }
      if (s.readings_error) {
        parts.push(el("p", { class: "why" }, "Readings: " + s.readings_error));
      }
      if (s.readings.length) {
        parts.push(
          el(
            "table",
            { class: "readings" },
            el("thead", {}, el("tr", {}, el("th", {}, "Type"), el("th", {}, "Value"), el("th", {}, "Time"))),
            el(
              "tbody",
              {},
              ...s.readings.map((r) =>
                el("tr", {}, el("td", {}, r.type), el("td", {}, r.data), el("td", { class: "mono" }, r.time))
              )
            )
          )
        );
      } else if (!s.readings_error) {
        parts.push(el("p", { class: "why" }, "No readings yet."));
      }
    }
    return el("article", { class: "card node", "data-index": s.index }, ...parts);
  }

  // The answers first: are all readings copied, and what else is wrong.
  function renderHealth(health) {
    const section = document.getElementById("health");
    section.className = "health " + health.level + " copies-" + health.copies_level;
    const headline = document.getElementById("health-headline");
    headline.className = "headline " + health.copies_level;
    headline.textContent = health.headline;
    document.getElementById("health-items").replaceChildren(...health.items.map((item) =>
      el("li", { class: item.level, "data-kind": item.kind },
        item.text + " ", el("span", { class: "since" }, "for " + item.since))));
  }

  function render(data) {
    renderHealth(data.health);
    document.getElementById("summary-counts").textContent =
      data.counts.answering + " of " + data.counts.monitored + " servers answering";
    document.getElementById("servers").replaceChildren(...data.servers.map(serverRow));
    document.getElementById("matrix").replaceChildren(...matrixTable(data.matrix));
    document.getElementById("history").replaceChildren(...data.servers.map(historyRow));
    document.getElementById("nodes").replaceChildren(...data.servers.map(nodeCard));
  }

  function showStaleness() {
    const age = ageThen + (Date.now() - fetchedAt);
    const seconds = Math.round(age / 1000);
    let text = null;
    if (failure !== null && age > staleAfter) {
      text = "The monitor does not answer (" + failure + "): the data shown is " + seconds + " s old.";
    } else if (monitorNotice) {
      text = monitorNotice;
    } else if (age > staleAfter) {
      text = "The data is stale: last updated " + seconds + " s ago.";
    }
    notice.textContent = text || "";
    notice.hidden = text === null;
    document.body.classList.toggle("is-stale", text !== null);
  }

  // Fetch again just after the monitor's next cycle should have ended (its
  // data was ageThen old when fetched), so a change shows within about one
  // interval; when that cannot be told, simply every interval.
  function nextDelay() {
    if (failure !== null || monitorNotice) {
      return interval;
    }
    const wait = interval - ageThen + 250;
    return wait >= 250 ? Math.min(wait, interval) : interval;
  }

  async function refresh() {
    try {
      const response = await fetch(api, {
        cache: "no-store",
        headers: { Accept: "application/json" },
        signal: AbortSignal.timeout(staleAfter),
      });
      if (!response.ok) {
        throw new Error("HTTP " + response.status);
      }
      const data = await response.json();
      render(data);
      fetchedAt = Date.now();
      ageThen = (data.age_s || 0) * 1000;
      monitorNotice = data.stale;
      failure = null;
    } catch (error) {
      failure = error.message || String(error);
    }
    showStaleness();
    setTimeout(refresh, nextDelay());
  }

  setTimeout(refresh, nextDelay());
  setInterval(showStaleness, 1000);
})();
