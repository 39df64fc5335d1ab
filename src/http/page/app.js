// The live twin page of edge-agent (issue #7). Plain JavaScript, no framework, no build step.
//
// Data flow: the change stream (GET /te/v1/changes, Server-Sent Events) says `reset` first, then
// the page reads every state document (GET /te/v1/state) and applies the `change` events that
// follow. Events are queued and applied in batches, once per animation frame; a batch marks what
// it touched (tree, selected entity, bridges) and only that is drawn again. The tree is drawn
// lazily: only the children of expanded nodes, CHILD_PAGE at a time. Measurement history is
// fetched for the selected entity only. Everything from the agent is untrusted text: it reaches
// the DOM through textContent and setAttribute only, never as markup.
'use strict';

(() => {
  const SEVERITIES = ['critical', 'major', 'minor', 'warning'];
  const CHILD_PAGE = 200;
  const FILTER_MAX = 200;
  const HISTORY_MAX = 300;
  const EVENTS_KEPT = 10;
  const EVENTS_SHOWN = 20;
  const READY_POLL_MS = 4000;
  const RETRY_MS = 3000;
  const FLUSH_FALLBACK_MS = 250;
  const SVG_NS = 'http://www.w3.org/2000/svg';
  const BRIDGE_NAME = /^mosquitto-.+-bridge$/;
  const collator = new Intl.Collator(undefined, { numeric: true, sensitivity: 'base' });

  // ---- the model: the agent's state documents and a parent → children index -----------------

  const model = {
    entities: new Map(), // topic id → state document
    children: new Map(), // parent topic id → Set of child topic ids
    sorted: new Map(), // parent topic id → sorted child ids (cache)
    roots: null, // sorted root ids (cache)
    bridges: null, // sorted bridge ids (cache)
  };

  const view = {
    selected: null,
    expanded: new Set(),
    windows: new Map(), // parent → {start, end}: the drawn slice of its sorted children
    filter: '',
    items: new Map(), // key → rendered treeitem element
    history: new Map(), // series key → [{t, v}], of the selected entity only
    historyTypes: new Set(), // measurement types whose history was asked for
    historyGen: 0,
    loaded: false,
    scrollTo: null, // the selected item, to scroll into view once drawn
  };

  // What the next render draws again. `tree` rebuilds the whole tree (first load, filter, roots);
  // otherwise only the drawn items named here are: `groups` with their drawn subtree, `rows` as
  // their own row, and every drawn item whose `@health` names an entity of `health`. Drawing thus
  // costs what is drawn again, never a pass over all entities.
  const dirty = { tree: false, detail: false, bridges: false, groups: new Set(), rows: new Set(), health: new Set() };

  const stream = {
    es: null,
    queue: [],
    loading: false,
    generation: 0,
    lastSeq: null,
    scheduled: false,
    fallback: 0,
    reconnectTimer: 0,
    refetching: new Set(),
  };

  const $ = (id) => document.getElementById(id);
  const isObj = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);

  // Keys from the agent are device-controlled (`te/<id>/e/__proto__`): every object indexed by
  // such a key has no prototype, so that `__proto__`, `constructor` or `prototype` are plain own
  // keys there, never Object.prototype or its members.
  const dict = () => Object.create(null);
  function toDict(value) {
    const d = dict();
    if (isObj(value)) for (const key of Object.keys(value)) d[key] = value[key];
    return d;
  }

  // ---- small DOM helpers (text only) -------------------------------------------------------

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    setAttrs(node, attrs);
    appendAll(node, children);
    return node;
  }

  function svg(tag, attrs, ...children) {
    const node = document.createElementNS(SVG_NS, tag);
    setAttrs(node, attrs);
    appendAll(node, children);
    return node;
  }

  function setAttrs(node, attrs) {
    if (!attrs) return;
    for (const [name, value] of Object.entries(attrs)) {
      if (value === undefined || value === null || value === false) continue;
      if (name === 'class') node.setAttribute('class', value);
      else if (name === 'text') node.textContent = String(value);
      else node.setAttribute(name, String(value));
    }
  }

  function appendAll(node, children) {
    for (const child of children) {
      if (child === undefined || child === null || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
  }

  function jsonText(value) {
    if (typeof value === 'string') return value;
    try {
      return JSON.stringify(value);
    } catch (_) {
      return String(value);
    }
  }

  function fmtTime(iso) {
    if (typeof iso !== 'string') return '';
    const ms = Date.parse(iso);
    if (Number.isNaN(ms)) return iso;
    const d = new Date(ms);
    const today = new Date().toDateString() === d.toDateString();
    return today ? d.toLocaleTimeString() : d.toLocaleString();
  }

  function timeEl(iso) {
    if (typeof iso !== 'string') return el('span', { class: 'muted', text: '–' });
    return el('time', { datetime: iso, title: iso, text: fmtTime(iso) });
  }

  function statusClass(prefix, status) {
    const known = ['successful', 'failed', 'executing', 'init', 'scheduled', 'up', 'down', 'unknown'];
    return `${prefix} ${prefix}-${known.includes(status) ? status : 'other'}`;
  }

  // ---- names, kinds and health -------------------------------------------------------------

  function shortName(id) {
    const s = id.split('/');
    if (s.length === 4) {
      if (s[2] === 'service' && s[3]) return s[3];
      if (s[1] && !s[2] && !s[3]) return s[1];
    }
    return id;
  }

  function kindOf(doc) {
    const type = doc && doc['@type'];
    if (type === 'child-device') return 'child';
    return typeof type === 'string' ? type : '?';
  }

  const KIND_RANKS = new Map([
    ['device', 0],
    ['child-device', 1],
    ['service', 2],
  ]);

  function kindRank(doc) {
    const rank = KIND_RANKS.get(doc && doc['@type']);
    return rank === undefined ? 3 : rank;
  }

  function healthStatus(health) {
    if (!isObj(health)) return null;
    return typeof health.status === 'string' ? health.status : 'unknown';
  }

  // The entity's own health, else that of the entity its `@health` names (§6.1).
  function healthOf(doc) {
    if (!doc) return { status: null };
    const own = healthStatus(doc.health);
    if (own) return { status: own, health: doc.health };
    const via = doc['@health'];
    if (typeof via === 'string') {
      const other = model.entities.get(via);
      const status = other && healthStatus(other.health);
      if (status) return { status, health: other.health, via };
    }
    return { status: null };
  }

  function severityRank(sev) {
    const i = SEVERITIES.indexOf(String(sev).toLowerCase());
    return i < 0 ? SEVERITIES.length : i;
  }

  function severityName(sev) {
    const s = String(sev || '').toLowerCase();
    return SEVERITIES.includes(s) ? s : 'other';
  }

  function mainDeviceId() {
    for (const id of roots()) {
      if (model.entities.get(id)['@type'] === 'device') return id;
    }
    return null;
  }

  function isBridge(id, doc) {
    // Cheapest tests first: this runs for every change event.
    return (
      !!doc &&
      doc['@type'] === 'service' &&
      BRIDGE_NAME.test(shortName(id)) &&
      typeof doc['@parent'] === 'string' &&
      doc['@parent'] === mainDeviceId()
    );
  }

  // ---- the parent index --------------------------------------------------------------------

  function parentOf(doc) {
    const p = doc && doc['@parent'];
    return typeof p === 'string' ? p : null;
  }

  // The sorted child lists are kept up to date in place (a binary search and a splice), so that
  // one registration under a parent with 10,000 children does not sort them all again.
  function index(id, parent) {
    if (parent === null) return;
    let set = model.children.get(parent);
    if (!set) model.children.set(parent, (set = new Set()));
    if (set.has(id)) return;
    set.add(id);
    const list = model.sorted.get(parent);
    if (list) {
      let lo = 0;
      let hi = list.length;
      while (lo < hi) {
        const mid = (lo + hi) >>> 1;
        if (compareIds(list[mid], id) < 0) lo = mid + 1;
        else hi = mid;
      }
      list.splice(lo, 0, id);
    }
  }

  function unindex(id, parent) {
    if (parent === null) return;
    const set = model.children.get(parent);
    if (!set || !set.delete(id)) return;
    if (set.size === 0) model.children.delete(parent);
    const list = model.sorted.get(parent);
    if (list) {
      const at = list.indexOf(id);
      if (at >= 0) list.splice(at, 1);
    }
  }

  function isRoot(doc) {
    const p = parentOf(doc);
    return p === null || !model.entities.has(p);
  }

  // What `id` was before its registration changes: `relink` compares it with what it is after.
  function linkOf(id) {
    const doc = model.entities.get(id);
    return doc ? { parent: parentOf(doc), type: doc['@type'], root: isRoot(doc), matched: matchesFilter(id, doc) } : null;
  }

  // Updates the parent index after `id` was added, removed or registered again (`before` from
  // `linkOf`), and marks what must be drawn again: the parents' groups, or the whole tree when
  // the roots change (an entity with no known parent, or one whose children were or become roots).
  function relink(id, before) {
    const doc = model.entities.get(id);
    const after = doc ? { parent: parentOf(doc), type: doc['@type'], root: isRoot(doc), matched: matchesFilter(id, doc) } : null;
    const moved = !before || !after || before.parent !== after.parent || before.type !== after.type;
    if (moved) {
      if (before) unindex(id, before.parent);
      if (after) index(id, after.parent);
    }
    const orphans = !before !== !after && model.children.has(id);
    if ((before && before.root) || (after && after.root) || orphans) {
      model.roots = null;
      model.bridges = null;
      dirty.tree = true;
      dirty.bridges = true;
    } else if (moved) {
      const main = mainDeviceId();
      for (const p of new Set([before && before.parent, after && after.parent])) {
        if (p === null) continue;
        dirty.groups.add(p);
        if (p === main && ((before && before.type === 'service') || (after && after.type === 'service'))) {
          model.bridges = null;
          dirty.bridges = true;
        }
      }
    }
    if (view.filter && ((before && before.matched) || (after && after.matched))) dirty.tree = true;
    if (doc && isBridge(id, doc)) dirty.bridges = true; // a re-read bridge's `since` and `flaps`
    dirty.rows.add(id);
    dirty.health.add(id); // entities whose `@health` names it
    dirty.detail = true; // the selected entity's parent link and child count
  }

  function compareIds(a, b) {
    const da = model.entities.get(a);
    const db = model.entities.get(b);
    return kindRank(da) - kindRank(db) || collator.compare(shortName(a), shortName(b)) || (a < b ? -1 : a > b ? 1 : 0);
  }

  function childIds(parent) {
    let list = model.sorted.get(parent);
    if (!list) {
      list = Array.from(model.children.get(parent) || []).sort(compareIds);
      model.sorted.set(parent, list);
    }
    return list;
  }

  // Entities with no parent, or whose parent is not (yet) known.
  function roots() {
    if (!model.roots) {
      const list = [];
      for (const [id, doc] of model.entities) {
        const p = parentOf(doc);
        if (p === null || !model.entities.has(p)) list.push(id);
      }
      model.roots = list.sort(compareIds);
    }
    return model.roots;
  }

  function bridgeIds() {
    if (!model.bridges) {
      const main = mainDeviceId();
      model.bridges = main ? childIds(main).filter((id) => isBridge(id, model.entities.get(id))) : [];
    }
    return model.bridges;
  }

  // ---- applying the state and the changes --------------------------------------------------

  const SECTIONS = ['twin', 'config', 'health', 'capabilities', 'measurements', 'alarms', 'events', 'commands', 'children'];

  // Event records read with a state document (GET …/state): a change replayed after that read
  // may carry one of them again (see `sameEvent`).
  const fromState = new WeakSet();

  // A state document as the model keeps it: a null-prototype copy, its sections null-prototype
  // maps too (commands two levels deep), whatever the agent sent.
  function toDoc(raw) {
    const doc = toDict(raw);
    for (const key of ['twin', 'capabilities', 'measurements', 'alarms']) doc[key] = toDict(doc[key]);
    if (!isObj(doc.config)) doc.config = {};
    if (!isObj(doc.health)) doc.health = null;
    if (!Array.isArray(doc.children)) doc.children = [];
    const events = dict();
    for (const [type, list] of Object.entries(isObj(doc.events) ? doc.events : {})) {
      if (!Array.isArray(list)) continue;
      const records = list.filter(isObj);
      for (const rec of records) fromState.add(rec);
      events[type] = records;
    }
    doc.events = events;
    const commands = dict();
    for (const [op, cmds] of Object.entries(isObj(doc.commands) ? doc.commands : {})) {
      if (isObj(cmds)) commands[op] = toDict(cmds);
    }
    doc.commands = commands;
    return doc;
  }

  // Registration metadata onto `doc`, minus the names of its sections.
  function assignMeta(doc, meta) {
    for (const key of Object.keys(meta)) if (!SECTIONS.includes(key)) doc[key] = meta[key];
  }

  function replaceAll(docs) {
    model.entities.clear();
    model.children.clear();
    model.sorted.clear();
    for (const doc of Array.isArray(docs) ? docs : []) {
      if (!isObj(doc) || typeof doc['@topic-id'] !== 'string') continue;
      model.entities.set(doc['@topic-id'], toDoc(doc));
    }
    for (const [id, doc] of model.entities) index(id, parentOf(doc));
    model.roots = null;
    model.bridges = null;
    dirty.tree = true;
    dirty.bridges = true;
    dirty.detail = true;
    if (!view.loaded) {
      view.loaded = true;
      for (const id of roots()) view.expanded.add(id);
      const wanted = fromHash();
      select(wanted && model.entities.has(wanted) ? wanted : mainDeviceId() || roots()[0] || null, false);
    } else if (view.selected && model.entities.has(view.selected)) {
      startHistory(view.selected);
    }
  }

  function applyRegistration(id, meta) {
    const old = model.entities.get(id);
    const before = linkOf(id);
    if (!isObj(meta)) {
      if (!old) return;
      model.entities.delete(id);
    } else if (old) {
      for (const key of Object.keys(old)) if (key.startsWith('@')) delete old[key];
      assignMeta(old, meta);
      old['@topic-id'] = id;
    } else {
      const doc = toDoc(null);
      assignMeta(doc, meta);
      doc['@topic-id'] = id;
      model.entities.set(id, doc);
    }
    relink(id, before);
  }

  // An event record already among those of a state read: the same change, replayed after it.
  function sameEvent(a, b) {
    return fromState.has(a) && a.received === b.received && a.time === b.time && jsonText(a.payload) === jsonText(b.payload);
  }

  // `map` is a null-prototype map (`dict`): `key` is an own key whatever its name.
  function setOrDelete(map, key, value) {
    if (value === null || value === undefined) delete map[key];
    else map[key] = value;
  }

  function apply(change) {
    if (!isObj(change)) return;
    const id = change['@topic-id'];
    const channel = change.channel;
    const value = change.value;
    if (typeof id !== 'string' || typeof channel !== 'string') return;
    if (channel === '') {
      applyRegistration(id, value);
      return;
    }
    const doc = model.entities.get(id);
    if (!doc) {
      refetch(id);
      return;
    }
    const slash = channel.indexOf('/');
    const kind = slash < 0 ? channel : channel.slice(0, slash);
    const rest = slash < 0 ? '' : channel.slice(slash + 1);
    switch (kind) {
      case 'twin':
        setOrDelete(doc.twin, rest, value);
        break;
      case 'config':
        doc.config = isObj(value) ? value : {};
        break;
      case 'm':
        setOrDelete(doc.measurements, rest, isObj(value) ? value : null);
        if (id === view.selected && isObj(value)) noteMeasurement(id, rest, value);
        break;
      case 'e': {
        // The one channel that is not idempotent: after a reset (or a refetch) the state read
        // may already hold the event a queued change brings again.
        if (!isObj(value)) {
          delete doc.events[rest];
          break;
        }
        const list = doc.events[rest] || [];
        if (!list.some((rec) => sameEvent(rec, value))) doc.events[rest] = [value, ...list].slice(0, EVENTS_KEPT);
        break;
      }
      case 'a':
        setOrDelete(doc.alarms, rest, isObj(value) ? value : null);
        dirty.rows.add(id);
        break;
      case 'status':
        if (rest !== 'health') return;
        doc.health = isObj(value) ? value : null;
        dirty.rows.add(id);
        dirty.health.add(id);
        if (isBridge(id, doc)) refetch(id);
        break;
      case 'cmd': {
        const at = rest.indexOf('/');
        if (at < 0) {
          setOrDelete(doc.capabilities, rest, value);
        } else {
          const op = rest.slice(0, at);
          const cmd = rest.slice(at + 1);
          const ops = doc.commands[op] || (doc.commands[op] = dict());
          setOrDelete(ops, cmd, value);
          if (Object.keys(ops).length === 0) delete doc.commands[op];
        }
        break;
      }
      default:
        return;
    }
    // A device's health dot follows its `@health` service: any health change may move it.
    if (id === view.selected || kind === 'status') dirty.detail = true;
    if (isBridge(id, doc)) dirty.bridges = true;
  }

  // Re-reads one entity's state document (bridges' `since`/`flaps`/`last_down`, or an entity
  // a change named before its registration arrived).
  function refetch(id) {
    if (stream.refetching.has(id)) return;
    stream.refetching.add(id);
    getJson(entityPath(id) + '/state')
      .then((doc) => {
        if (!isObj(doc)) return;
        const old = model.entities.get(id);
        const before = linkOf(id);
        const fresh = toDoc(doc);
        if (old) {
          for (const key of Object.keys(old)) delete old[key];
          Object.assign(old, fresh);
        } else {
          model.entities.set(id, fresh);
        }
        relink(id, before);
        schedule();
      })
      .catch(() => {}) // gone meanwhile: its removal comes through the stream
      .finally(() => stream.refetching.delete(id));
  }

  // ---- the change stream -------------------------------------------------------------------

  function connect() {
    clearTimeout(stream.reconnectTimer);
    if (stream.es) stream.es.close();
    const url = stream.lastSeq === null ? '/te/v1/changes' : `/te/v1/changes?since=${stream.lastSeq}`;
    const es = new EventSource(url);
    stream.es = es;
    es.addEventListener('open', () => {
      setAgent('ok', 'Agent: live');
      pollReady();
    });
    es.addEventListener('reset', (e) => {
      const data = parse(e.data);
      if (data && Number.isFinite(data.seq)) stream.lastSeq = data.seq;
      resync();
    });
    es.addEventListener('change', (e) => {
      const data = parse(e.data);
      if (!data) return;
      if (Number.isFinite(data.seq)) stream.lastSeq = data.seq;
      stream.queue.push(data);
      schedule();
    });
    es.addEventListener('error', () => {
      if (stream.es !== es) return;
      setAgent('bad', 'Agent: connection lost, reconnecting…');
      setBroker('pending', 'Broker: unknown');
      // EventSource retries by itself unless the answer was not a stream at all.
      if (es.readyState === EventSource.CLOSED) {
        if (!view.loaded) loadState();
        stream.reconnectTimer = setTimeout(connect, RETRY_MS);
      }
    });
  }

  // Reads the whole state again and applies the changes that follow (as on `reset`).
  function resync() {
    stream.queue = [];
    loadState();
  }

  function parse(text) {
    try {
      return JSON.parse(text);
    } catch (_) {
      return null;
    }
  }

  async function loadState() {
    const generation = ++stream.generation;
    stream.loading = true;
    try {
      const docs = await getJson('/te/v1/state');
      if (generation !== stream.generation) return;
      replaceAll(docs);
      stream.loading = false;
      if (stream.es && stream.es.readyState === EventSource.OPEN) setAgent('ok', 'Agent: live');
      schedule();
      render();
    } catch (err) {
      if (generation !== stream.generation) return;
      agentFailure(err);
      setTimeout(() => {
        if (generation === stream.generation) loadState();
      }, RETRY_MS);
    }
  }

  function schedule() {
    if (stream.scheduled) return;
    stream.scheduled = true;
    requestAnimationFrame(flush);
    // Hidden tabs get no animation frames: do not let the queue grow without bound.
    stream.fallback = setTimeout(flush, FLUSH_FALLBACK_MS);
  }

  function flush() {
    if (!stream.scheduled) return;
    stream.scheduled = false;
    clearTimeout(stream.fallback);
    if (stream.loading) return; // loadState schedules again once the state is there
    const batch = stream.queue;
    stream.queue = [];
    let failed = false;
    for (const change of batch) {
      try {
        apply(change);
      } catch (_) {
        failed = true; // the model may be off: read it all again, as after a reset
      }
    }
    if (failed) resync();
    render();
  }

  // ---- HTTP --------------------------------------------------------------------------------

  function entityPath(id) {
    return '/te/v1/entities/' + id.split('/').map(encodeURIComponent).join('/');
  }

  class HttpError extends Error {}

  async function getJson(url) {
    const res = await fetch(url, { cache: 'no-store', headers: { accept: 'application/json' } });
    if (!res.ok) throw new HttpError(`HTTP ${res.status} for ${url}`);
    return res.json();
  }

  // fetch rejects with a TypeError when the agent cannot be reached at all.
  function agentFailure(err) {
    if (err instanceof HttpError) setAgent('bad', `Agent: ${err.message}`);
    else setAgent('bad', 'Agent: unreachable');
  }

  async function pollReady() {
    let res;
    try {
      res = await fetch('/readyz', { cache: 'no-store' });
    } catch (err) {
      agentFailure(err);
      setBroker('pending', 'Broker: unknown');
      return;
    }
    const body = await res.json().catch(() => ({}));
    const reason = isObj(body) && typeof body.reason === 'string' ? body.reason : '';
    if (res.ok && body.status === 'ready') {
      setBroker('ok', 'Broker: connected');
    } else if (isObj(body) && body.status === 'disconnected') {
      setBroker('bad', `Broker: disconnected${reason ? ` (${reason})` : ''}`);
    } else {
      setBroker('pending', `Broker: ${body.status || 'not ready'}${reason ? ` (${reason})` : ''}`);
    }
  }

  function setPill(node, state, text) {
    node.className = `pill ${state}`;
    node.dataset.state = state;
    if (node.textContent !== text) node.textContent = text;
  }

  function setAgent(state, text) {
    setPill($('agent-status'), state, text);
  }

  function setBroker(state, text) {
    setPill($('broker-status'), state, text);
  }

  // ---- measurement history of the selected entity ------------------------------------------

  function isSeries(v) {
    return isObj(v) && typeof v.value === 'number';
  }

  // [key, label, path, {value, time}] for each series of one measurement type.
  function seriesOf(type, obj) {
    const out = [];
    if (!isObj(obj)) return out;
    for (const [name, v] of Object.entries(obj)) {
      if (isSeries(v)) {
        out.push([`${type}\u0000${name}`, name, `${type}/${name}`, v]);
      } else if (isObj(v)) {
        for (const [member, s] of Object.entries(v)) {
          if (isSeries(s)) out.push([`${type}\u0000${name}\u0000${member}`, `${name}.${member}`, `${type}/${name}/${member}`, s]);
        }
      }
    }
    return out;
  }

  function pushPoint(key, time, value) {
    const t = Date.parse(time);
    if (Number.isNaN(t) || typeof value !== 'number') return;
    const list = view.history.get(key) || [];
    const last = list[list.length - 1];
    if (last && t <= last.t) return;
    list.push({ t, v: value });
    if (list.length > HISTORY_MAX) list.splice(0, list.length - HISTORY_MAX);
    view.history.set(key, list);
  }

  function startHistory(id) {
    view.historyGen++;
    view.history = new Map();
    view.historyTypes = new Set();
    const doc = model.entities.get(id);
    if (!doc) return;
    for (const [type, obj] of Object.entries(doc.measurements)) {
      for (const [key, , , s] of seriesOf(type, obj)) pushPoint(key, s.time, s.value);
      fetchHistory(id, type);
    }
  }

  function noteMeasurement(id, type, obj) {
    for (const [key, , , s] of seriesOf(type, obj)) pushPoint(key, s.time, s.value);
    if (!view.historyTypes.has(type)) fetchHistory(id, type);
  }

  function fetchHistory(id, type) {
    view.historyTypes.add(type);
    const generation = view.historyGen;
    getJson(`${entityPath(id)}/m/${encodeURIComponent(type)}`)
      .then((body) => {
        if (generation !== view.historyGen || !isObj(body) || !isObj(body.series)) return;
        const merge = (key, points) => {
          if (!Array.isArray(points)) return;
          const fetched = [];
          for (const p of points) {
            const t = isObj(p) ? Date.parse(p.time) : NaN;
            if (!Number.isNaN(t) && typeof p.value === 'number') fetched.push({ t, v: p.value });
          }
          if (fetched.length === 0) return;
          const lastT = fetched[fetched.length - 1].t;
          const live = (view.history.get(key) || []).filter((p) => p.t > lastT);
          view.history.set(key, fetched.concat(live).slice(-HISTORY_MAX));
        };
        for (const [name, v] of Object.entries(body.series)) {
          if (Array.isArray(v)) merge(`${type}\u0000${name}`, v);
          else if (isObj(v)) for (const [member, pts] of Object.entries(v)) merge(`${type}\u0000${name}\u0000${member}`, pts);
        }
        dirty.detail = true;
        schedule();
      })
      .catch(() => {}); // no history route or entity gone: the sparkline grows from live points
  }

  // ---- selection, expansion and the URL hash -----------------------------------------------

  function fromHash() {
    if (location.hash.length < 2) return null;
    try {
      return decodeURIComponent(location.hash.slice(1));
    } catch (_) {
      return null;
    }
  }

  function select(id, updateHash = true) {
    if (id === null) return;
    const changed = id !== view.selected;
    if (view.selected !== null) dirty.rows.add(view.selected);
    view.selected = id;
    dirty.rows.add(id);
    revealPath(id);
    if (changed) view.scrollTo = id;
    if (changed) startHistory(id);
    if (updateHash && changed) history.replaceState(null, '', `#${encodeURIComponent(id)}`);
    dirty.detail = true;
  }

  // The drawn slice [start, end) of `parent`'s `count` sorted children: a page from the first
  // one unless "show more", "show earlier" or `revealPath` moved it.
  function windowOf(parent, count) {
    const w = view.windows.get(parent);
    if (!w) return { start: 0, end: Math.min(count, CHILD_PAGE) };
    const start = Math.max(0, Math.min(w.start, count - CHILD_PAGE));
    return { start, end: Math.min(count, Math.max(w.end, start + CHILD_PAGE)) };
  }

  // Expands the ancestors of `id` and moves each one's drawn window to the page that holds the
  // next one down (one page, whatever the number of children); the ancestors that changed are
  // drawn again (the topmost one's subtree holds the others).
  function revealPath(id) {
    let doc = model.entities.get(id);
    let child = id;
    for (let guard = 0; doc && guard < 64; guard++) {
      const parent = parentOf(doc);
      if (parent === null || !model.entities.has(parent)) break;
      if (!view.expanded.has(parent)) {
        view.expanded.add(parent);
        dirty.groups.add(parent);
      }
      const kids = childIds(parent);
      const at = kids.indexOf(child);
      const w = windowOf(parent, kids.length);
      if (at >= 0 && (at < w.start || at >= w.end)) {
        const start = Math.floor(at / CHILD_PAGE) * CHILD_PAGE;
        view.windows.set(parent, { start, end: start + CHILD_PAGE });
        dirty.groups.add(parent);
      }
      child = parent;
      doc = model.entities.get(parent);
    }
  }

  function toggle(id, open = !view.expanded.has(id)) {
    if (open) view.expanded.add(id);
    else view.expanded.delete(id);
    dirty.groups.add(id);
  }

  // ---- rendering ---------------------------------------------------------------------------

  function render() {
    const tree = $('tree');
    const active = document.activeElement;
    const focusedKey = tree.contains(active) && active.dataset ? active.dataset.key : null;
    if (dirty.tree) renderTree();
    else updateTree();
    dirty.groups.clear();
    dirty.rows.clear();
    dirty.health.clear();
    // The roving tab stop (the one item with tabindex 0): the focused item, else the selected one;
    // the focus stays on its item when that is drawn again.
    const target =
      (focusedKey && view.items.get(focusedKey)) ||
      (view.selected && view.items.get(view.selected)) ||
      tree.querySelector('[role=treeitem]');
    if (target && target.tabIndex !== 0) {
      for (const other of tree.querySelectorAll('[role=treeitem][tabindex="0"]')) other.tabIndex = -1;
      target.tabIndex = 0;
    }
    if (target && focusedKey && document.activeElement !== target) target.focus({ preventScroll: true });
    if (view.scrollTo !== null) {
      const item = view.items.get(view.scrollTo);
      if (item) item.firstChild.scrollIntoView({ block: 'nearest' });
      view.scrollTo = null;
    }
    if (dirty.bridges) renderBridges();
    if (dirty.detail) renderDetail();
    dirty.tree = dirty.bridges = dirty.detail = false;
    const n = model.entities.size;
    const count = `${n.toLocaleString()} ${n === 1 ? 'entity' : 'entities'}`;
    if ($('entity-count').textContent !== count) $('entity-count').textContent = count;
  }

  function renderTree() {
    view.items = new Map();
    const frag = document.createDocumentFragment();
    if (view.filter) {
      renderFiltered(frag);
    } else {
      const list = roots();
      list.forEach((id, i) => frag.append(treeItem(id, 1, i + 1, list.length)));
    }
    $('tree').replaceChildren(frag);
  }

  // Draws again only the items `dirty` names, if they are drawn: work in proportion to them.
  function updateTree() {
    for (const id of dirty.groups) redrawItem(id);
    if (dirty.health.size) {
      for (const key of view.items.keys()) {
        const doc = model.entities.get(key);
        if (doc && dirty.health.has(doc['@health'])) dirty.rows.add(key);
      }
    }
    for (const id of dirty.rows) if (!dirty.groups.has(id)) redrawRow(id);
  }

  // Forgets the drawn items of a subtree about to be replaced.
  function forget(li) {
    if (view.items.get(li.dataset.key) === li) view.items.delete(li.dataset.key);
    for (const item of li.querySelectorAll('[role=treeitem]')) {
      if (view.items.get(item.dataset.key) === item) view.items.delete(item.dataset.key);
    }
  }

  // `id`'s item with its subtree, at the same place (level, position and set size).
  function redrawItem(id) {
    const li = view.items.get(id);
    if (!li || !model.entities.has(id)) return;
    const level = Number(li.getAttribute('aria-level'));
    const pos = Number(li.getAttribute('aria-posinset'));
    const size = Number(li.getAttribute('aria-setsize'));
    forget(li);
    li.replaceWith(treeItem(id, level, pos, size, !!view.filter));
  }

  // `id`'s own row (health, alarms, selection); its children stay as they are.
  function redrawRow(id) {
    const li = view.items.get(id);
    const doc = model.entities.get(id);
    if (!li || !doc) return;
    const flat = !!view.filter;
    const kids = flat ? [] : childIds(id);
    li.setAttribute('aria-selected', String(id === view.selected));
    li.firstChild.replaceWith(treeRow(id, doc, kids, kids.length > 0 && view.expanded.has(id), flat));
  }

  // "Show more" (or "show earlier") of `parent`: the next (previous) page joins the drawn ones.
  // Returns the id of the drawn child next to where the item was, to move the focus to.
  function showMore(more) {
    const parent = more.dataset.more;
    const earlier = more.dataset.earlier !== undefined;
    const kids = childIds(parent);
    const { start, end } = windowOf(parent, kids.length);
    const level = Number(more.getAttribute('aria-level'));
    const frag = document.createDocumentFragment();
    let next;
    if (earlier) {
      const from = Math.max(0, start - CHILD_PAGE);
      view.windows.set(parent, { start: from, end });
      if (from > 0) frag.append(moreItem(parent, from, level, true));
      kids.slice(from, start).forEach((k, i) => frag.append(treeItem(k, level, from + i + 1, kids.length)));
      next = kids[start - 1];
    } else {
      const to = Math.min(kids.length, end + CHILD_PAGE);
      view.windows.set(parent, { start, end: to });
      kids.slice(end, to).forEach((k, i) => frag.append(treeItem(k, level, end + i + 1, kids.length)));
      if (kids.length > to) frag.append(moreItem(parent, kids.length - to, level));
      next = kids[end];
    }
    forget(more);
    more.replaceWith(frag);
    return next;
  }

  function matchesFilter(id, doc) {
    if (!view.filter) return false;
    const needle = view.filter.toLowerCase();
    const name = doc.twin && typeof doc.twin.name === 'string' ? doc.twin.name : '';
    return id.toLowerCase().includes(needle) || name.toLowerCase().includes(needle);
  }

  function renderFiltered(frag) {
    const found = [];
    let total = 0;
    for (const [id, doc] of model.entities) {
      if (matchesFilter(id, doc)) {
        total++;
        if (found.length < FILTER_MAX) found.push(id);
      }
    }
    found.sort(compareIds);
    found.forEach((id, i) => frag.append(treeItem(id, 1, i + 1, found.length, true)));
    if (total > found.length) {
      frag.append(el('li', { role: 'none', class: 'muted', text: `${total - found.length} more matches: refine the filter` }));
    } else if (total === 0) {
      frag.append(el('li', { role: 'none', class: 'muted', text: 'No entity matches.' }));
    }
  }

  function treeItem(id, level, pos, size, flat = false) {
    const doc = model.entities.get(id);
    const kids = flat ? [] : childIds(id);
    const expanded = kids.length > 0 && view.expanded.has(id);
    const li = el('li', {
      role: 'treeitem',
      'aria-level': level,
      'aria-posinset': pos,
      'aria-setsize': size,
      'aria-selected': String(id === view.selected),
      'aria-expanded': kids.length > 0 ? String(expanded) : null,
      tabindex: '-1',
      title: id,
    });
    li.dataset.key = id;
    view.items.set(id, li);
    li.append(treeRow(id, doc, kids, expanded, flat));
    if (expanded) {
      const group = el('ul', { role: 'group' });
      const { start, end } = windowOf(id, kids.length);
      if (start > 0) group.append(moreItem(id, start, level + 1, true));
      kids.slice(start, end).forEach((k, i) => group.append(treeItem(k, level + 1, start + i + 1, kids.length)));
      if (kids.length > end) group.append(moreItem(id, kids.length - end, level + 1));
      li.append(group);
    }
    return li;
  }

  function treeRow(id, doc, kids, expanded, flat) {
    const health = healthOf(doc).status;
    const row = el(
      'div',
      { class: 'row' },
      el('span', { class: 'twisty', 'aria-hidden': 'true', text: kids.length ? (expanded ? '▾' : '▸') : '' }),
      el('span', { class: `dot ${health ? statusName(health) : ''}`, 'aria-hidden': 'true' }),
      el('span', { class: 'label', text: flat ? id : shortName(id) }),
      el('span', { class: 'kind', text: kindOf(doc) }),
    );
    const alarms = Object.values(doc.alarms || {});
    if (alarms.length) {
      const worst = alarms.map((a) => (isObj(a.payload) ? a.payload.severity : '')).sort((a, b) => severityRank(a) - severityRank(b))[0];
      row.append(el('span', { class: `abadge sev-${severityName(worst)}`, title: 'active alarms', text: alarms.length }));
    }
    if (kids.length && !expanded) row.append(el('span', { class: 'count', text: `(${kids.length})` }));
    if (health) row.append(el('span', { class: 'visually-hidden', text: `health ${health}` }));
    return row;
  }

  // The item that draws the next page of `parent`'s children, or the previous one (`earlier`).
  function moreItem(parent, hidden, level, earlier = false) {
    const li = el('li', { role: 'treeitem', 'aria-level': level, tabindex: '-1', class: earlier ? 'more earlier' : 'more' });
    li.dataset.more = parent;
    if (earlier) li.dataset.earlier = '';
    li.dataset.key = `\u0000${earlier ? 'earlier' : 'more'}\u0000${parent}`;
    view.items.set(li.dataset.key, li);
    const next = Math.min(hidden, CHILD_PAGE);
    li.append(
      el(
        'div',
        { class: 'row' },
        el('span', { class: 'twisty', 'aria-hidden': 'true', text: '…' }),
        el('span', { class: 'label', text: `Show ${next} ${earlier ? 'earlier' : 'more'} (${hidden.toLocaleString()} not shown)` }),
      ),
    );
    return li;
  }

  function statusName(status) {
    return ['up', 'down'].includes(status) ? status : 'unknown';
  }

  function renderBridges() {
    const body = $('bridges-body');
    const ids = bridgeIds();
    if (ids.length === 0) {
      body.replaceChildren(el('p', { class: 'muted', text: 'No bridge.' }));
      return;
    }
    const rows = ids.map((id) => {
      const doc = model.entities.get(id);
      const status = healthStatus(doc.health) || 'unknown';
      const tr = el(
        'tr',
        null,
        el('td', null, el('span', { class: 'mono', text: shortName(id) })),
        el('td', null, el('span', { class: statusClass('status', status), text: status })),
        el('td', null, timeEl(doc.since)),
        el('td', { class: 'num', text: doc.flaps === undefined || doc.flaps === null ? '–' : jsonText(doc.flaps) }),
        el('td', null, timeEl(doc.last_down)),
      );
      tr.dataset.bridge = id;
      return tr;
    });
    body.replaceChildren(
      el(
        'div',
        { class: 'scroll' },
        el(
          'table',
          null,
          el('thead', null, el('tr', null, ...['Bridge', 'State', 'Since', 'Flaps', 'Last down'].map((h) => el('th', { scope: 'col', text: h })))),
          el('tbody', null, ...rows),
        ),
      ),
    );
  }

  function renderDetail() {
    const body = $('detail-body');
    const id = view.selected;
    const doc = id === null ? null : model.entities.get(id);
    $('detail-label').textContent = id === null ? 'Entity' : shortName(id);
    if (!doc) {
      body.replaceChildren(
        id === null
          ? el('p', { class: 'muted', text: view.loaded ? 'Select an entity.' : 'Loading…' })
          : el('p', { class: 'banner', role: 'alert', text: `${id} is not registered (any more).` }),
      );
      return;
    }
    const parts = [
      headSection(id, doc),
      alarmSection(doc),
      measurementSection(doc),
      eventSection(doc),
      el('div', { class: 'grid2' }, twinSection(doc), capabilitySection(doc)),
      operationSection(doc),
      configSection(doc),
    ];
    body.replaceChildren(...parts.filter(Boolean));
  }

  function section(title, count, ...content) {
    const h = el('h3', null, title, count === null ? null : el('span', { class: 'muted', text: ` (${count})` }));
    return el('section', { class: `sec-${title.toLowerCase()}` }, h, ...content);
  }

  function headSection(id, doc) {
    const dl = el('dl', { class: 'head-grid' });
    const row = (term, ...value) => dl.append(el('dt', { text: term }), el('dd', null, ...value));
    row('Topic id', el('span', { class: 'mono', text: id }));
    row('Type', jsonText(doc['@type'] === undefined ? '?' : doc['@type']));
    if (doc['@id'] !== undefined) row('External id', el('span', { class: 'mono', text: jsonText(doc['@id']) }));
    const parent = parentOf(doc);
    if (parent !== null) row('Parent', entityButton(parent));
    const health = healthOf(doc);
    if (health.status) {
      row(
        'Health',
        el('span', { class: statusClass('status', health.status), text: health.status }),
        ' ',
        health.via ? el('span', { class: 'muted' }, 'via ', entityButton(health.via), ' ') : null,
        health.health && health.health.received ? timeEl(health.health.received) : null,
      );
    } else {
      row('Health', el('span', { class: 'muted', text: 'no health reported' }));
    }
    const kids = childIds(id).length;
    if (kids) row('Children', String(kids));
    return dl;
  }

  function entityButton(id) {
    const b = el('button', { type: 'button', class: 'linkish mono', text: id });
    b.addEventListener('click', () => {
      select(id);
      render();
      const item = view.items.get(id);
      if (item) focusItem(item);
    });
    return b;
  }

  function alarmSection(doc) {
    const alarms = Object.entries(doc.alarms).map(([type, rec]) => ({
      type,
      rec: isObj(rec) ? rec : {},
      payload: isObj(rec) && isObj(rec.payload) ? rec.payload : {},
    }));
    if (alarms.length === 0) return section('Alarms', 0, el('p', { class: 'muted', text: 'No active alarm.' }));
    alarms.sort(
      (a, b) =>
        severityRank(a.payload.severity) - severityRank(b.payload.severity) ||
        String(b.rec.time || '').localeCompare(String(a.rec.time || '')) ||
        a.type.localeCompare(b.type),
    );
    const tbody = el('tbody');
    for (const a of alarms) {
      const sev = a.payload.severity === undefined ? '' : jsonText(a.payload.severity);
      const name = severityName(sev);
      const tr = el(
        'tr',
        null,
        el('td', null, el('span', { class: `sev sev-${name}`, text: sev || 'none' })),
        el('td', null, el('span', { class: 'mono', text: a.type })),
        el('td', { class: 'text', text: a.payload.text === undefined ? '' : jsonText(a.payload.text) }),
        el('td', null, timeEl(a.rec.time)),
      );
      tr.dataset.severity = name;
      tr.dataset.alarm = a.type;
      tbody.append(tr);
    }
    const counts = new Map();
    for (const a of alarms) {
      const n = severityName(a.payload.severity);
      counts.set(n, (counts.get(n) || 0) + 1);
    }
    const summary = el('p', { class: 'summary' });
    for (const [n, c] of counts) summary.append(el('span', { class: `sev sev-${n}`, text: `${c} ${n}` }), ' ');
    return section(
      'Alarms',
      alarms.length,
      summary,
      el(
        'div',
        { class: 'scroll' },
        el('table', null, el('thead', null, el('tr', null, ...['Severity', 'Type', 'Text', 'Time'].map((h) => el('th', { scope: 'col', text: h })))), tbody),
      ),
    );
  }

  function measurementSection(doc) {
    const rows = [];
    for (const type of Object.keys(doc.measurements).sort(collator.compare)) {
      for (const [key, label, path, s] of seriesOf(type, doc.measurements[type])) {
        const points = view.history.get(key) || [];
        const tr = el(
          'tr',
          null,
          el('td', null, el('span', { class: 'mono', text: type })),
          el('td', null, el('span', { class: 'mono', text: label })),
          el('td', { class: 'num value', text: String(s.value) }),
          el('td', null, sparkline(points)),
          el('td', null, timeEl(s.time)),
        );
        tr.dataset.series = path;
        rows.push(tr);
      }
    }
    if (rows.length === 0) return section('Measurements', 0, el('p', { class: 'muted', text: 'No measurement.' }));
    return section(
      'Measurements',
      rows.length,
      el(
        'div',
        { class: 'scroll' },
        el(
          'table',
          null,
          el('thead', null, el('tr', null, ...['Type', 'Series', 'Value', 'History', 'Time'].map((h) => el('th', { scope: 'col', text: h })))),
          el('tbody', null, ...rows),
        ),
      ),
    );
  }

  function sparkline(points) {
    const w = 100;
    const h = 24;
    const node = svg('svg', {
      class: 'spark',
      viewBox: `0 0 ${w} ${h}`,
      preserveAspectRatio: 'none',
      role: 'img',
      'data-points': points.length,
    });
    if (points.length === 0) {
      node.setAttribute('aria-label', 'no history');
      return node;
    }
    let lo = Infinity;
    let hi = -Infinity;
    for (const p of points) {
      lo = Math.min(lo, p.v);
      hi = Math.max(hi, p.v);
    }
    const t0 = points[0].t;
    const span = points[points.length - 1].t - t0;
    const pad = 2; // room for the end marker
    const x = (p, i) => pad + (span > 0 ? (p.t - t0) / span : points.length > 1 ? i / (points.length - 1) : 1) * (w - 2 * pad);
    const y = (p) => (hi > lo ? h - 2 - ((p.v - lo) / (hi - lo)) * (h - 4) : h / 2);
    const coords = points.map((p, i) => `${x(p, i).toFixed(2)},${y(p).toFixed(2)}`).join(' ');
    const last = points[points.length - 1];
    node.setAttribute('aria-label', `${points.length} points, min ${lo}, max ${hi}`);
    node.append(
      svg('title', { text: `${points.length} points, min ${lo}, max ${hi}` }),
      svg('polyline', { points: coords, 'data-points': points.length }),
      svg('circle', { cx: x(last, points.length - 1).toFixed(2), cy: y(last).toFixed(2), r: 1.8 }),
    );
    return node;
  }

  function eventSection(doc) {
    const all = [];
    for (const [type, list] of Object.entries(doc.events)) {
      if (!Array.isArray(list)) continue;
      for (const rec of list) if (isObj(rec)) all.push({ type, rec });
    }
    if (all.length === 0) return section('Events', 0, el('p', { class: 'muted', text: 'No recent event.' }));
    all.sort((a, b) => String(b.rec.received || b.rec.time || '').localeCompare(String(a.rec.received || a.rec.time || '')));
    const rows = all.slice(0, EVENTS_SHOWN).map(({ type, rec }) => {
      const payload = isObj(rec.payload) ? rec.payload : {};
      const { text, time, ...rest } = payload;
      const shown = text === undefined ? '' : jsonText(text);
      const extra = Object.keys(rest).length ? jsonText(rest) : '';
      return el(
        'tr',
        null,
        el('td', null, el('span', { class: 'mono', text: type })),
        el('td', null, shown, extra ? el('span', { class: 'muted mono', text: ` ${extra}` }) : null),
        el('td', null, timeEl(rec.time)),
      );
    });
    return section(
      'Events',
      all.length,
      el(
        'div',
        { class: 'scroll' },
        el('table', null, el('thead', null, el('tr', null, ...['Type', 'Text', 'Time'].map((h) => el('th', { scope: 'col', text: h })))), el('tbody', null, ...rows)),
      ),
    );
  }

  function keyValueTable(map, emptyText) {
    const keys = Object.keys(map).sort(collator.compare);
    if (keys.length === 0) return el('p', { class: 'muted', text: emptyText });
    return el(
      'div',
      { class: 'scroll' },
      el(
        'table',
        null,
        el(
          'tbody',
          null,
          ...keys.map((k) => el('tr', null, el('th', { scope: 'row', class: 'mono', text: k }), el('td', null, el('span', { class: 'mono', text: jsonText(map[k]) })))),
        ),
      ),
    );
  }

  function twinSection(doc) {
    return section('Twin', Object.keys(doc.twin).length, keyValueTable(doc.twin, 'No twin fragment.'));
  }

  function capabilitySection(doc) {
    return section('Capabilities', Object.keys(doc.capabilities).length, keyValueTable(doc.capabilities, 'No capability.'));
  }

  function configSection(doc) {
    if (Object.keys(doc.config).length === 0) return null;
    return section('Config', null, el('pre', { class: 'json', text: JSON.stringify(doc.config, null, 2) }));
  }

  function operationSection(doc) {
    const rows = [];
    for (const op of Object.keys(doc.commands).sort(collator.compare)) {
      const cmds = doc.commands[op];
      if (!isObj(cmds)) continue;
      for (const cmd of Object.keys(cmds).sort(collator.compare).reverse()) {
        const payload = isObj(cmds[cmd]) ? cmds[cmd] : {};
        const status = typeof payload.status === 'string' ? payload.status : 'init';
        const tr = el(
          'tr',
          null,
          el('td', null, el('span', { class: 'mono', text: op })),
          el('td', null, el('span', { class: 'mono', text: cmd })),
          el('td', null, el('span', { class: statusClass('status', status), text: status })),
          el('td', { text: payload.reason === undefined ? '' : jsonText(payload.reason) }),
        );
        tr.dataset.command = `${op}/${cmd}`;
        rows.push(tr);
      }
    }
    if (rows.length === 0) return section('Operations', 0, el('p', { class: 'muted', text: 'No operation.' }));
    return section(
      'Operations',
      rows.length,
      el(
        'div',
        { class: 'scroll' },
        el('table', null, el('thead', null, el('tr', null, ...['Operation', 'Id', 'Status', 'Reason'].map((h) => el('th', { scope: 'col', text: h })))), el('tbody', null, ...rows)),
      ),
    );
  }

  // ---- interaction (WAI-ARIA tree view keyboard pattern) -----------------------------------

  function focusItem(item) {
    for (const other of $('tree').querySelectorAll('[role=treeitem][tabindex="0"]')) other.tabIndex = -1;
    item.tabIndex = 0;
    item.focus();
  }

  function visibleItems() {
    return Array.from($('tree').querySelectorAll('[role=treeitem]'));
  }

  function activate(item) {
    if (item.dataset.more !== undefined) {
      const first = showMore(item);
      render();
      const next = view.items.get(first);
      if (next) focusItem(next);
      return;
    }
    select(item.dataset.key);
    render();
    const again = view.items.get(item.dataset.key);
    if (again) focusItem(again);
  }

  function onTreeClick(e) {
    const item = e.target.closest('[role=treeitem]');
    if (!item) return;
    if (item.dataset.more === undefined && e.target.closest('.twisty') && item.hasAttribute('aria-expanded')) {
      toggle(item.dataset.key);
      render();
      const again = view.items.get(item.dataset.key);
      if (again) focusItem(again);
      return;
    }
    activate(item);
  }

  function onTreeKey(e) {
    const item = e.target.closest('[role=treeitem]');
    if (!item) return;
    const items = visibleItems();
    const at = items.indexOf(item);
    const key = item.dataset.key;
    const expandable = item.hasAttribute('aria-expanded');
    const expanded = item.getAttribute('aria-expanded') === 'true';
    let handled = true;
    switch (e.key) {
      case 'ArrowDown':
        if (at + 1 < items.length) focusItem(items[at + 1]);
        break;
      case 'ArrowUp':
        if (at > 0) focusItem(items[at - 1]);
        break;
      case 'Home':
        if (items.length) focusItem(items[0]);
        break;
      case 'End':
        if (items.length) focusItem(items[items.length - 1]);
        break;
      case 'ArrowRight':
        if (expandable && !expanded) {
          toggle(key, true);
          render();
        } else if (expanded && at + 1 < items.length) {
          focusItem(items[at + 1]);
        }
        break;
      case 'ArrowLeft': {
        if (expandable && expanded) {
          toggle(key, false);
          render();
        } else {
          const parent = item.parentElement && item.parentElement.closest('[role=treeitem]');
          if (parent) focusItem(parent);
        }
        break;
      }
      case 'Enter':
      case ' ':
        activate(item);
        break;
      default:
        handled = false;
    }
    if (handled) e.preventDefault();
  }

  function onFilter(e) {
    view.filter = e.target.value.trim();
    dirty.tree = true;
    render();
  }

  function onHash() {
    const id = fromHash();
    if (id && model.entities.has(id) && id !== view.selected) {
      select(id, false);
      render();
    }
  }

  function start() {
    const tree = $('tree');
    tree.addEventListener('click', onTreeClick);
    tree.addEventListener('keydown', onTreeKey);
    $('filter').addEventListener('input', onFilter);
    window.addEventListener('hashchange', onHash);
    connect();
    pollReady();
    setInterval(pollReady, READY_POLL_MS);
  }

  start();
})();
