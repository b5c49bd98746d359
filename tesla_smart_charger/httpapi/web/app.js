// Tesla Smart Charger dashboard: live data over server-sent events, drawn on a <canvas>.
// No libraries and no build step, so it works offline from the daemon itself.
"use strict";

(function () {
  const WINDOW_SECS = 15 * 60;
  const $ = (id) => document.getElementById(id);
  const canvas = $("chart");
  const ctx = canvas.getContext("2d");

  // null until the daemon's first event: nothing is drawn from made-up values before that.
  let config = null;
  let points = []; // samples, oldest first, at most one per second
  let skew = 0; // server clock minus ours, so a phone with a wrong clock still draws right
  let source = null;
  let retryTimer = null;
  let backoff = 1000; // ms before the next reconnect of our own; doubles up to 30 s
  let lastPanel = null;
  const TOKEN_KEY = "tsc-api-token";
  const CAR_COLORS = ["--car", "--car2", "--car3", "--phase2"];

  // --- formatting -------------------------------------------------------------------------
  const amps = (v) => (v === null || v === undefined ? "–" : `${Number(v).toFixed(1)} A`);
  const whole = (v) => (v === null || v === undefined ? "–" : `${v} A`);
  const dollars = (v) => (v === null || v === undefined ? "–" : `$${Number(v).toFixed(3)}`);
  const clock = (iso) => {
    const d = new Date(iso);
    return Number.isNaN(d.getTime()) ? iso : d.toLocaleTimeString();
  };
  const css = (name) => getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  const carColor = (i) => css(CAR_COLORS[i % CAR_COLORS.length]);
  const carNames = () => (config && config.cars && config.cars.length ? config.cars : ["Car"]);
  const several = () => carNames().length > 1;
  const carOf = (p, name) => (p.cars || []).find((c) => c.id === name) || null;

  // The apiToken lives in this tab's sessionStorage only: gone when the tab closes.
  function getToken() {
    try { return sessionStorage.getItem(TOKEN_KEY) || ""; } catch (_) { return ""; }
  }
  function setToken(value) {
    try {
      if (value) sessionStorage.setItem(TOKEN_KEY, value);
      else sessionStorage.removeItem(TOKEN_KEY);
    } catch (_) { /* storage refused: the token is simply not kept */ }
  }
  const controlsLocked = () => Boolean(config && config.tokenRequired && !getToken());

  // Solar: the surplus is what the house would export without the cars (amps per phase).
  function surplus(p) {
    if (!p.supply || p.supply.length === 0) return null;
    const cars = p.cars ? p.cars.reduce((sum, c) => sum + (c.amps || 0), 0) : (p.car || 0);
    const mean = p.supply.reduce((a, b) => a + b, 0) / p.supply.length;
    return Math.max(0, cars - mean);
  }
  function solarShown() {
    const last = points[points.length - 1];
    if (last && (last.cars || []).some((c) => c.mode === "solar" || c.mode === "minsolar")) return true;
    return points.some((p) => p.supply && Math.min(...p.supply) < 0);
  }

  // --- data -------------------------------------------------------------------------------
  function prune(now) {
    const horizon = now - WINDOW_SECS;
    while (points.length && points[0].t < horizon) points.shift();
  }

  function addPoint(p) {
    // supplyPhases auto: the meter may report more phases than were known at connect time.
    if (config !== null && p.supply && p.supply.length > config.phases) config.phases = p.supply.length;
    const last = points[points.length - 1];
    if (last && Math.floor(last.t) === Math.floor(p.t)) points[points.length - 1] = p;
    else if (!last || p.t > last.t) points.push(p);
    prune(p.t);
  }

  // --- the chart --------------------------------------------------------------------------
  function resize() {
    const ratio = window.devicePixelRatio || 1;
    const box = canvas.getBoundingClientRect();
    const w = Math.max(1, Math.round(box.width * ratio));
    const h = Math.max(1, Math.round(box.height * ratio));
    if (canvas.width !== w || canvas.height !== h) {
      canvas.width = w;
      canvas.height = h;
    }
    return ratio;
  }

  function series() {
    const out = [];
    for (let i = 0; i < config.phases; i++) {
      out.push({ label: config.phases > 1 ? `House supply L${i + 1}` : "House supply",
                 color: css(`--phase${i + 1}`), value: (p) => (p.supply ? p.supply[i] : null) });
    }
    // Without a meter channel on the charger the car's current is the setpoint it was given.
    const inferred = config.carMeasured ? "" : " (inferred)";
    if (!several()) {
      out.push({ label: `Car${inferred}`, color: css("--car"), value: (p) => p.car, width: 2.5 });
      out.push({ label: "Setpoint", color: css("--setpoint"), value: (p) => p.setpoint, dash: [4, 4], step: true });
    } else {
      // Each car its own line in its own colour: never one car's figure for all of them.
      carNames().forEach((name, i) => {
        const color = carColor(i);
        out.push({ label: `${name}${inferred}`, color, width: 2.5, car: name,
                   value: (p) => { const c = carOf(p, name); return c ? c.amps : null; } });
        out.push({ label: `${name} setpoint`, color, dash: [4, 4], step: true, width: 1.2,
                   value: (p) => { const c = carOf(p, name); return c ? c.setpoint : null; } });
      });
    }
    if (solarShown()) out.push({ label: "Solar surplus", color: css("--surplus"), value: surplus, width: 2, swatch: "sw-surplus" });
    return out;
  }

  let legendKey = "";

  function drawLegend(lines) {
    const legend = $("legend");
    const exporting = points.some((p) => p.supply && Math.min(...p.supply) < 0);
    const key = `${lines.map((l) => l.label).join("|")}/${config.homeMaxAmps}/${exporting}`;
    if (key === legendKey) return;
    legendKey = key;
    legend.replaceChildren();
    lines.forEach((line) => {
      const li = document.createElement("li");
      const sw = document.createElement("span");
      sw.style.background = line.color; // CSSOM, not an inline style attribute: CSP allows it
      if (line.dash) sw.className = "dashed";
      li.append(sw, line.label);
      legend.append(li);
    });
    if (exporting) {
      const li = document.createElement("li");
      const sw = document.createElement("span");
      sw.className = "sw-export";
      li.append(sw, "Export (below 0 A)");
      legend.append(li);
    }
    const li = document.createElement("li");
    const sw = document.createElement("span");
    sw.className = "sw-limit";
    li.append(sw, `Limit (homeMaxAmps ${config.homeMaxAmps} A)`);
    legend.append(li);
  }

  function drawConnecting(ratio) {
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    ctx.font = `${14 * ratio}px system-ui, sans-serif`;
    ctx.fillStyle = css("--muted");
    ctx.textAlign = "center";
    ctx.textBaseline = "middle";
    ctx.fillText("connecting…", canvas.width / 2, canvas.height / 2);
    $("legend").replaceChildren();
    legendKey = "";
    canvas.dataset.points = "0";
    canvas.dataset.spanSecs = "0";
  }

  function draw() {
    const ratio = resize();
    if (config === null) { drawConnecting(ratio); return; }
    const W = canvas.width;
    const H = canvas.height;
    const now = serverNow();
    prune(now);
    const lines = series();
    drawLegend(lines);

    let top = Math.max(config.homeMaxAmps * 1.15, 10);
    let low = 0;
    for (const p of points) {
      for (const line of lines) {
        const v = line.value(p);
        if (v !== null && v !== undefined && v > top) top = v * 1.05;
        if (v !== null && v !== undefined && v < low) low = v;
      }
    }
    // Export (solar) is drawn below zero: the axis goes as far down as the supply did.
    const step = top - low > 60 ? 20 : top - low > 30 ? 10 : 5;
    const bottom = low < 0 ? -Math.ceil((-low * 1.05) / step) * step : 0;
    const pad = { l: 38 * ratio, r: 10 * ratio, t: 8 * ratio, b: 22 * ratio };
    // Always the last 15 minutes, as the title says: a short history fills the right end.
    const span = WINDOW_SECS;
    const x = (t) => pad.l + ((t - (now - span)) / span) * (W - pad.l - pad.r);
    const y = (v) => H - pad.b - ((Math.max(v, bottom) - bottom) / (top - bottom)) * (H - pad.t - pad.b);
    const exporting = bottom < 0;

    ctx.clearRect(0, 0, W, H);
    ctx.font = `${11 * ratio}px system-ui, sans-serif`;
    ctx.lineWidth = 1 * ratio;
    ctx.strokeStyle = css("--grid");
    ctx.fillStyle = css("--muted");

    // Horizontal grid every 5 or 10 A, vertical every 5 minutes.
    ctx.textAlign = "right";
    ctx.textBaseline = "middle";
    if (exporting) {
      // The export band: below zero the house gives power back to the grid.
      ctx.save();
      ctx.fillStyle = css("--export");
      ctx.fillRect(pad.l, y(0), W - pad.l - pad.r, y(bottom) - y(0));
      ctx.fillStyle = css("--surplus");
      ctx.textAlign = "left";
      ctx.textBaseline = "top";
      ctx.fillText("export", pad.l + 4 * ratio, y(0) + 3 * ratio);
      ctx.restore();
    }
    for (let v = bottom; v <= top; v += step) {
      ctx.beginPath();
      ctx.moveTo(pad.l, y(v));
      ctx.lineTo(W - pad.r, y(v));
      ctx.stroke();
      ctx.fillText(`${v} A`, pad.l - 4 * ratio, y(v));
    }
    ctx.textAlign = "center";
    ctx.textBaseline = "top";
    const maxTicks = Math.max(2, Math.min(6, Math.floor((W - pad.l - pad.r) / (70 * ratio))));
    const tick = [10, 15, 20, 30, 60, 120, 180, 300, 450].find((s) => span / s <= maxTicks) || 900;
    for (let ago = span; ago >= 0; ago -= tick) {
      const t = now - ago;
      ctx.beginPath();
      ctx.moveTo(x(t), pad.t);
      ctx.lineTo(x(t), H - pad.b);
      ctx.stroke();
      ctx.textAlign = ago === span ? "left" : ago === 0 ? "right" : "center";
      const label = ago === 0 ? "now" : ago % 60 === 0 ? `-${ago / 60} min` : `-${ago} s`;
      ctx.fillText(label, x(t), H - pad.b + 4 * ratio);
    }

    // The limit line.
    if (config.homeMaxAmps > 0) {
      ctx.save();
      ctx.strokeStyle = css("--limit");
      ctx.lineWidth = 1.5 * ratio;
      ctx.setLineDash([8 * ratio, 5 * ratio]);
      ctx.beginPath();
      ctx.moveTo(pad.l, y(config.homeMaxAmps));
      ctx.lineTo(W - pad.r, y(config.homeMaxAmps));
      ctx.stroke();
      ctx.restore();
    }

    // The series; a gap of more than 5 s (meter silent, daemon restarted) breaks the line.
    for (const line of lines) {
      ctx.save();
      ctx.beginPath();
      ctx.rect(pad.l, 0, W - pad.l - pad.r, H - pad.b);
      ctx.clip();
      ctx.strokeStyle = line.color;
      ctx.lineWidth = (line.width || 1.8) * ratio;
      ctx.lineJoin = "round";
      if (line.dash) ctx.setLineDash(line.dash.map((d) => d * ratio));
      ctx.beginPath();
      let prev = null;
      for (const p of points) {
        const v = line.value(p);
        if (v === null || v === undefined) { prev = null; continue; }
        if (prev === null || p.t - prev.t > 5) ctx.moveTo(x(p.t), y(v));
        else {
          if (line.step) ctx.lineTo(x(p.t), y(prev.v));
          ctx.lineTo(x(p.t), y(v));
        }
        prev = { t: p.t, v };
      }
      // Hold the newest value until now, so a quiet controller still shows a line.
      if (prev !== null && now - prev.t < 60) ctx.lineTo(x(now), y(prev.v));
      ctx.stroke();
      ctx.restore();
    }
    canvas.dataset.points = String(points.length);
    canvas.dataset.spanSecs = String(span);
    canvas.dataset.cars = String(lines.filter((l) => l.car).length || (lines.some((l) => l.label.startsWith("Car")) ? 1 : 0));
    canvas.dataset.export = exporting ? "1" : "0";
    canvas.dataset.bottom = String(bottom);
    canvas.dataset.surplus = lines.some((l) => l.swatch === "sw-surplus") ? "1" : "0";
  }

  // --- the panels -------------------------------------------------------------------------
  const serverNow = () => Date.now() / 1000 + skew;

  function showSample(p) {
    setConnection("live", "live"); // live only once real data has arrived
    const badge = $("state");
    const worst = p.supply && p.supply.length ? Math.max(...p.supply) : null;
    const over = worst !== null && config !== null && worst > config.homeMaxAmps;
    // An overload is red at once, whatever the controller is still doing about it.
    badge.dataset.state = over ? "overload" : p.state;
    badge.textContent = over
      ? `overload: ${worst.toFixed(1)} A of ${config.homeMaxAmps} A`
      : p.state.replace("_", " ");
    $("reason").textContent = p.reason;
    $("supply").textContent = p.supply ? p.supply.map(amps).join(" · ") : "–";
    $("supply").dataset.over = String(over);
    showNowCars(p);
    $("car").textContent = amps(p.car);
    $("setpoint").textContent = `${whole(p.setpoint)} / ${whole(p.target)}`;
    $("headroom").textContent = p.supply
      ? amps(config.homeMaxAmps - Math.max(...p.supply))
      : "–";
    showBreaker(p.breaker);
  }

  // Several cars: one row each in the Now card, its draw, setpoint, mode and state.
  function showNowCars(p) {
    const list = $("now-cars");
    const many = several();
    list.hidden = !many;
    document.querySelectorAll(".one-car").forEach((el) => { el.hidden = many; });
    if (!many) return;
    list.replaceChildren();
    carNames().forEach((name, i) => {
      const c = carOf(p, name) || {};
      const li = document.createElement("li");
      li.dataset.car = name;
      li.style.borderLeftColor = carColor(i);
      const label = document.createElement("span");
      label.className = "car-name";
      label.textContent = name;
      const draw = document.createElement("span");
      draw.className = "car-draw";
      draw.textContent = amps(c.amps);
      const setp = document.createElement("span");
      setp.className = "car-setp";
      setp.textContent = `setpoint ${whole(c.setpoint)} · ${c.mode || "–"}`;
      const st = document.createElement("span");
      st.className = "car-status";
      st.dataset.status = c.status || "";
      st.textContent = c.status || "–";
      li.append(label, draw, setp, st);
      list.append(li);
    });
  }

  // The capacity window and the grid operator's limit, when the daemon has them.
  const LIMIT_TITLES = { capacity: "Capacity window", grid_limit: "Grid limit" };
  // Words for the fields the capacity guard and the grid limit report; others by their name.
  const LIMIT_WORDS = {
    limit_kw: "limit, kW",
    window_mins: "window, min",
    window_avg_kw: "average so far, kW",
    projection_kw: "projected, kW",
    last_window_kw: "last window, kW",
    month_peak_kw: "month's peak, kW",
    import_ceiling_kw: "import allowed now, kW",
    car_kw: "cars now, kW",
  };
  function showLimits(panel) {
    const dl = $("limits");
    dl.replaceChildren();
    for (const [section, title] of Object.entries(LIMIT_TITLES)) {
      const data = panel[section];
      if (!data || typeof data !== "object") continue;
      for (const [k, v] of Object.entries(data)) {
        if (v !== null && typeof v === "object") continue;
        const div = document.createElement("div");
        div.dataset.section = section;
        const dt = document.createElement("dt");
        dt.textContent = `${title}: ${LIMIT_WORDS[k] || k.replace(/_/g, " ")}`;
        const dd = document.createElement("dd");
        dd.textContent = v === null ? "–"
          : typeof v === "number" ? String(Math.round(v * 100) / 100)
          : typeof v === "boolean" ? (v ? "yes" : "no") : String(v);
        div.append(dt, dd);
        dl.append(div);
      }
    }
    dl.hidden = dl.childElementCount === 0;
  }

  function cell(tr, text, className) {
    const td = document.createElement("td");
    td.textContent = text;
    if (className) td.className = className;
    tr.append(td);
    return td;
  }

  function emptyRow(body, cols, text) {
    const tr = document.createElement("tr");
    const td = cell(tr, text, "muted");
    td.colSpan = cols;
    body.append(tr);
  }

  const worstOf = (r) => (r && r.supply_amps && r.supply_amps.length ? Math.max(...r.supply_amps) : null);

  function showJournal(entries) {
    const body = $("journal");
    body.replaceChildren();
    if (!entries || entries.length === 0) { emptyRow(body, 5, "None yet"); return; }
    for (const e of entries) {
      const tr = document.createElement("tr");
      tr.dataset.kind = e.kind;
      cell(tr, clock(e.time));
      const what = `${e.kind.replace(/_/g, " ")}${e.amps === null || e.amps === undefined ? "" : ` ${e.amps} A`}`;
      cell(tr, e.car && several() ? `${e.car}: ${what}` : what);
      cell(tr, e.result && e.result !== "ok" && e.kind !== "escalation" ? `${e.reason} (${e.result})` : e.reason, "why");
      const before = worstOf(e.before);
      const after = worstOf(e.after);
      cell(tr, before === null ? "–" : `${before.toFixed(1)} → ${after === null ? "…" : `${after.toFixed(1)}`} A`);
      cell(tr, e.followed, e.followed === "yes" ? "followed-yes" : e.followed === "no" ? "followed-no" : "muted");
      body.append(tr);
    }
  }

  function showEnergy(days) {
    const head = $("energy-head");
    const body = $("energy");
    const names = [...new Set([...carNames(), ...(days || []).flatMap((d) => Object.keys(d.kwh))])];
    const tr = document.createElement("tr");
    for (const text of ["Day", ...names.map((n) => `${n}, kWh`)]) {
      const th = document.createElement("th");
      th.textContent = text;
      tr.append(th);
    }
    head.replaceChildren(tr);
    body.replaceChildren();
    if (!days || days.length === 0) { emptyRow(body, names.length + 1, "None yet"); return; }
    for (const d of days) {
      const row = document.createElement("tr");
      cell(row, d.day);
      for (const n of names) {
        const kwh = d.kwh[n];
        cell(row, kwh === undefined ? "–" : Number(kwh).toFixed(kwh < 1 ? 3 : 2));
      }
      body.append(row);
    }
  }

  // The breaker replica's heat per phase (% of trip); the gauge shows the hottest phase.
  function showBreaker(heat) {
    const gauge = $("breaker-gauge");
    if (!heat || heat.length === 0) {
      gauge.value = 0;
      $("breaker").textContent = "–";
      return;
    }
    gauge.value = Math.min(100, Math.max(...heat));
    $("breaker").textContent = heat.map((h) => `${Math.round(h)} %`).join(" · ");
  }

  function showPanel(panel) {
    const body = $("commands");
    body.replaceChildren();
    if (!panel.commands || panel.commands.length === 0) {
      const tr = document.createElement("tr");
      const td = document.createElement("td");
      td.colSpan = 4;
      td.className = "muted";
      td.textContent = "None yet";
      tr.append(td);
      body.append(tr);
    }
    for (const c of panel.commands || []) {
      const tr = document.createElement("tr");
      const command = c.amps === null ? c.command : `${c.command} ${c.amps} A`;
      const cells = [
        clock(c.at),
        several() && c.car ? `${c.car}: ${command}` : command,
        c.result,
        c.reason,
      ];
      cells.forEach((text, i) => {
        const td = document.createElement("td");
        td.textContent = text;
        if (i === 2) td.className = text === "ok" ? "result-ok" : "result-bad";
        if (i === 3) td.className = "why";
        tr.append(td);
      });
      body.append(tr);
    }
    const api = panel.api_calls || {};
    $("api-data").textContent = api.data ?? "–";
    $("api-command").textContent = api.command ?? "–";
    $("api-wake").textContent = api.wake ?? "–";
    $("api-cost-24h").textContent = dollars(api.cost_last_24h_usd);
    $("api-cost").textContent = dollars(api.cost_usd);
    const v = panel.vehicle || {};
    $("vehicle").textContent = v.charging_state ? `${v.state}, ${v.charging_state}` : (v.state || "–");
    lastPanel = panel;
    showCars(panel.vehicles);
    showJournal(panel.journal);
    showEnergy(panel.energy);
    showLimits(panel);
  }

  // --- the cars and their mode switch -------------------------------------------------
  const MODES = ["fast", "solar", "minsolar"];
  const MODE_TITLES = {
    fast: "As fast as the house allows",
    solar: "Only from solar surplus",
    minsolar: "Minimum current, plus any solar surplus",
  };
  let pending = null; // the VIN whose mode change is on its way

  function showMessage(kind, text) {
    const el = $("mode-message");
    el.dataset.kind = kind;
    el.textContent = text;
  }

  async function setMode(vin, label, mode) {
    pending = vin;
    document.querySelectorAll(`#cars button[data-vin="${CSS.escape(vin)}"]`).forEach((b) => { b.disabled = true; });
    showMessage("info", `Setting ${label} to ${mode}…`);
    try {
      const headers = { "Content-Type": "application/json" };
      const token = getToken();
      if (token) headers.Authorization = `Bearer ${token}`;
      const r = await fetch(`vehicles/${encodeURIComponent(vin)}/mode`, {
        method: "POST",
        headers,
        body: JSON.stringify({ mode }),
        credentials: "same-origin",
      });
      let body = {};
      try { body = await r.json(); } catch (_) { /* not JSON: the status says enough */ }
      if (r.ok) {
        showMessage("ok", `${label}: mode ${mode}.`);
        document.querySelectorAll(`#cars button[data-vin="${CSS.escape(vin)}"]`).forEach((b) => {
          b.setAttribute("aria-pressed", String(b.dataset.mode === mode));
        });
      } else if (r.status === 401) {
        setToken("");
        showTokenForm();
        showMessage("error", "The daemon refused that API token (apiToken): enter it again.");
      } else {
        showMessage("error", `Could not set ${label} to ${mode}: ${body.error || `HTTP ${r.status}`}`);
      }
    } catch (err) {
      showMessage("error", `Could not reach the daemon to set ${label} to ${mode}.`);
    } finally {
      pending = null;
      document.querySelectorAll("#cars button").forEach((b) => { b.disabled = controlsLocked(); });
    }
  }

  function showCars(cars) {
    const list = $("cars");
    if (pending !== null) return; // keep the buttons still while a click is on its way
    list.replaceChildren();
    if (!cars || cars.length === 0) {
      const li = document.createElement("li");
      li.className = "muted";
      li.textContent = "No car yet";
      list.append(li);
      return;
    }
    const modes = (config && config.chargeModes) || MODES;
    for (const car of cars) {
      const li = document.createElement("li");
      li.dataset.vin = car.vin || "";
      const label = car.name || car.vin || "Car";
      const head = document.createElement("div");
      head.className = "car-head";
      const name = document.createElement("span");
      name.className = "car-name";
      name.textContent = label;
      if (car.name && car.vin) name.title = car.vin;
      const state = document.createElement("span");
      state.className = "car-state";
      state.textContent = car.status || (car.charging_state ? `${car.state}, ${car.charging_state}` : (car.state || "–"));
      const setp = document.createElement("span");
      setp.className = "car-amps";
      setp.textContent = `${whole(car.setpoint_amps)} / ${whole(car.target_amps)}`;
      setp.title = "Setpoint / target";
      head.append(name, state, setp);
      li.append(head);
      if (car.vin) {
        const group = document.createElement("div");
        group.className = "modes";
        group.setAttribute("role", "group");
        group.setAttribute("aria-label", `Charging mode of ${label}`);
        for (const mode of modes) {
          const b = document.createElement("button");
          b.type = "button";
          b.textContent = mode;
          b.title = MODE_TITLES[mode] || mode;
          b.dataset.vin = car.vin;
          b.dataset.mode = mode;
          b.setAttribute("aria-pressed", String(car.mode === mode));
          b.disabled = controlsLocked(); // with apiToken: until the token is entered
          b.addEventListener("click", () => {
            if (b.getAttribute("aria-pressed") !== "true") setMode(car.vin, label, mode);
          });
          group.append(b);
        }
        li.append(group);
      }
      list.append(li);
    }
  }

  function showTokenForm() {
    const form = $("token-form");
    form.hidden = !(config && config.tokenRequired);
    $("token-forget").hidden = !getToken();
    if (lastPanel) showCars(lastPanel.vehicles);
  }

  $("token-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const value = $("token-input").value.trim();
    $("token-input").value = "";
    setToken(value);
    showMessage(value ? "info" : "error", value ? "Token kept in this tab until it closes." : "Enter the apiToken first.");
    showTokenForm();
  });
  $("token-forget").addEventListener("click", () => {
    setToken("");
    showMessage("info", "Token forgotten.");
    showTokenForm();
  });

  function showConfig() {
    $("limit").textContent = amps(config.homeMaxAmps);
    $("mode").textContent = config.mode || "–";
    $("car-label").textContent = config.carMeasured ? "Car" : "Car (inferred)";
    showTokenForm();
  }

  function setConnection(state, text) {
    const badge = $("connection");
    badge.dataset.conn = state;
    badge.textContent = text;
  }

  // --- the stream -------------------------------------------------------------------------
  function connect() {
    if (retryTimer !== null) { clearTimeout(retryTimer); retryTimer = null; }
    source = new EventSource("events");
    source.addEventListener("open", () => setConnection("connecting", "connecting…"));
    source.addEventListener("init", (e) => {
      backoff = 1000; // connected: the next outage starts again at one second
      const init = JSON.parse(e.data);
      config = init.config;
      skew = init.now - Date.now() / 1000;
      points = [];
      for (const p of init.history) addPoint(p);
      showConfig();
      showPanel(init);
      if (points.length) showSample(points[points.length - 1]);
      else setConnection("connecting", "connecting…");
      draw();
    });
    source.addEventListener("sample", (e) => {
      const p = JSON.parse(e.data);
      skew = p.t - Date.now() / 1000;
      addPoint(p);
      showSample(p);
      draw();
    });
    source.addEventListener("panel", (e) => showPanel(JSON.parse(e.data)));
    source.addEventListener("error", () => {
      if (source.readyState === EventSource.CLOSED) {
        // The browser gave up (the daemon is restarting, or answered with an error): retry
        // ourselves, waiting longer each time (1 s, 2 s, 4 s ... 30 s).
        const wait = backoff;
        backoff = Math.min(backoff * 2, 30000);
        setConnection("reconnecting", `reconnecting… (next try in ${Math.round(wait / 1000)} s)`);
        source.close();
        retryTimer = setTimeout(connect, wait);
      } else {
        setConnection("reconnecting", "reconnecting…");
      }
    });
  }

  window.addEventListener("resize", draw);
  setInterval(draw, 1000); // slide the time axis even when nothing changes
  connect();
  draw();
})();
