/* netfence report: the page's behaviour. The data (see netfence/report/model.py) is computed
 * by netfence; this script only decodes, looks up and draws. Every user-controlled string
 * (names, labels, messages, file names) reaches the page through textContent or the graph's
 * canvas, never through innerHTML. */
(function () {
  'use strict';

  const D = JSON.parse(document.getElementById('netfence-data').textContent);

  // ---------------------------------------------------------------- decoding and indexes

  function bytesOf(base64) {
    const bin = atob(base64);
    const bytes = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    return bytes;
  }
  function typed(array) {
    const bytes = bytesOf(array.data);
    if (array.dtype === 'u1') return bytes;
    if (array.dtype === 'u2') return new Uint16Array(bytes.buffer);
    return new Uint32Array(bytes.buffer);
  }

  const WORKLOAD = 0, SOURCE = 1, DESTINATION = 2;
  const NONE_ID = 0, ALL_ID = 1;
  const P = D.peers;
  const NP = P.label.length;
  const NW = P.workloads;
  const EXT = D.namespaces.length; // the pseudo-namespace of external ranges
  const NE = D.edges.count;
  const ES = typed(D.edges.src), ED = typed(D.edges.dst), EC = typed(D.edges.conn);
  const edgeAt = new Map();
  const outEdges = Array.from({ length: NP }, () => []);
  const inEdges = Array.from({ length: NP }, () => []);
  for (let e = 0; e < NE; e++) {
    edgeAt.set(ES[e] * NP + ED[e], e);
    outEdges[ES[e]].push(e);
    inEdges[ED[e]].push(e);
  }
  const C = D.classes;
  const sides = {};
  for (const direction of ['ingress', 'egress']) {
    const t = D.sides[direction];
    sides[direction] = {
      width: t.width, records: t.records, rowOf: C[`${direction}Row`],
      offsets: typed(t.rows.offsets), starts: typed(t.rows.starts), values: typed(t.rows.values),
    };
  }
  const meets = new Map();
  for (let i = 0; i < D.meet.length; i += 3) meets.set(D.meet[i] + ',' + D.meet[i + 1], D.meet[i + 2]);
  const groupOf = (k) => (P.side[k] === WORKLOAD ? P.ns[k] : EXT);
  const groupName = (g) => (g === EXT ? 'External' : D.namespaces[g]);
  const groupMembers = Array.from({ length: EXT + 1 }, () => []);
  for (let k = 0; k < NP; k++) groupMembers[groupOf(k)].push(k);
  // A range listed both as a source and as a destination is one node of the graph.
  const rangeNode = new Map();
  for (let k = NW; k < NP; k++) if (!rangeNode.has(P.label[k])) rangeNode.set(P.label[k], k);
  const diffAt = new Map();
  (D.diff || []).forEach((d, i) => { if (d.s >= 0 && d.d >= 0) diffAt.set(d.s * NP + d.d, i); });

  const connText = (id) => D.conns[id].text;
  function connHas(id, query) {
    const ranges = D.conns[id].ports[query.protocol];
    if (!ranges) return false;
    for (const [lo, hi] of ranges) if (query.port >= lo && query.port <= hi) return true;
    return false;
  }

  // ---------------------------------------------------------------- small DOM helpers

  const $ = (id) => document.getElementById(id);
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (key === 'class') node.className = value;
      else if (key === 'onclick') node.addEventListener('click', value);
      else if (key === 'title') node.title = value;
      else node.setAttribute(key, value);
    }
    for (const child of children) {
      if (child === null || child === undefined || child === false) continue;
      node.appendChild(typeof child === 'string' || typeof child === 'number'
        ? document.createTextNode(String(child)) : child);
    }
    return node;
  }
  const plural = (n, word) => `${n.toLocaleString('en')} ${word}${n === 1 ? '' : 's'}`;
  const percent = (part, whole) => (whole ? `${Math.round((100 * part) / whole)}%` : '–');
  const option = (value, text) => el('option', { value: String(value) }, text);

  // ---------------------------------------------------------------- port filter, colours

  let portAllowed = null; // per conns id: allows the queried port
  let portText = ''; // the port filter in effect, as typed
  function parsePort(text) {
    text = text.trim();
    if (!text || text.toLowerCase() === 'any') return null;
    const m = /^(\d{1,5})(?:\s*\/\s*(tcp|udp|sctp))?$/i.exec(text) || /^(tcp|udp|sctp)\s+(\d{1,5})$/i.exec(text);
    if (!m) return undefined;
    const numeric = /^\d/.test(m[1]);
    const port = Number(numeric ? m[1] : m[2]);
    const protocol = ((numeric ? m[2] : m[1]) || 'TCP').toUpperCase();
    if (port < 1 || port > 65535) return undefined;
    return { protocol, port };
  }
  function heat(share) {
    if (share <= 0) return '#f1f5f9';
    const t = Math.sqrt(share); // small shares stay visible
    const from = [191, 219, 254], to = [30, 58, 138];
    const c = from.map((v, i) => Math.round(v + (to[i] - v) * t));
    return `rgb(${c[0]},${c[1]},${c[2]})`;
  }
  function passes(e) { return portAllowed === null || portAllowed[EC[e]]; }

  // ---------------------------------------------------------------- explanations

  function endpoints(k) {
    if (P.side[k] === WORKLOAD) return P.classes[k].map((c) => ({ cls: c }));
    const range = P.side[k] === SOURCE ? k - NW : k - NW - P.sources;
    return [{ range }];
  }
  const columnOf = (point) => (point.cls !== undefined ? point.cls : C.ingressRow.length + point.range);
  /* The side record of class `subject` towards peer column `column`: its row is stored as
   * runs (model.run_lengths), found by binary search. */
  function record(direction, subject, column) {
    const t = sides[direction];
    const row = t.rowOf[subject];
    let lo = t.offsets[row], hi = t.offsets[row + 1] - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (t.starts[mid] <= column) lo = mid; else hi = mid - 1;
    }
    return t.records[t.values[lo]];
  }
  const policyKeys = (ids) => ids.map((p) => D.policies[p].key);
  /* The policies of every tier that select class c in a direction (each record of its row
   * lists them: they depend on the subject only). */
  const selecting = (direction, c) => record(direction, c, 0).policies;

  /* One side of a connection as netfence decided it (Engine.side / decide_side): the
   * policies selecting the subject in evaluation order, each of their rules with whether it
   * matches the peer, what it covers on the destination's ports and what it decided, and
   * what the side allows. */
  function side(direction, subject, peer) {
    const x = record(direction, subject, columnOf(peer));
    const matched = new Map(x.matched.map(([rule, conns, decided]) => [rule, { conns, decided }]));
    const rules = [];
    for (const policyId of x.policies) {
      for (const ruleId of D.policies[policyId][direction]) {
        const rule = D.rules[ruleId];
        const m = matched.get(ruleId);
        rules.push({
          rule: rule.provenance,
          policy: D.policies[policyId].key,
          action: rule.action,
          status: !m ? 'peer' : m.conns === NONE_ID ? 'ports' : 'matches',
          conns: m && m.conns !== NONE_ID ? connText(m.conns) : '',
          decided: m && m.conns !== NONE_ID ? connText(m.decided) : '',
          definition: rule.definition,
        });
      }
    }
    return {
      direction, applies: true,
      isolating: policyKeys(x.policies),
      tiers: x.policies.map((p) => D.policies[p].tier),
      rules, allowedId: x.allowed, allowed: connText(x.allowed),
    };
  }
  const notApplicable = (direction) => ({ direction, applies: false, isolating: [], tiers: [], rules: [], allowedId: ALL_ID, allowed: connText(ALL_ID) });

  function explainPoints(a, b) {
    const egress = a.cls !== undefined ? side('egress', a.cls, b) : notApplicable('egress');
    const ingress = b.cls !== undefined ? side('ingress', b.cls, a) : notApplicable('ingress');
    let result;
    if (!egress.applies) result = ingress.allowedId;
    else if (!ingress.applies) result = egress.allowedId;
    else result = meets.get(egress.allowedId + ',' + ingress.allowedId);
    return { egress, ingress, resultId: result, result: connText(result) };
  }

  /* Why source peer s may (not) open connections to destination peer d: one explanation per
   * distinct answer over the pod classes of both (replicas usually share one). */
  function explainPair(s, d) {
    const groups = new Map();
    endpoints(s).forEach((a, i) => {
      endpoints(d).forEach((b, j) => {
        const x = explainPoints(a, b);
        const key = JSON.stringify(x);
        let group = groups.get(key);
        if (!group) groups.set(key, (group = { ...x, sources: [], targets: [] }));
        if (a.cls !== undefined && !group.sources.includes(i)) group.sources.push(i);
        if (b.cls !== undefined && !group.targets.includes(j)) group.targets.push(j);
      });
    });
    const e = edgeAt.get(s * NP + d);
    return {
      src: P.label[s], dst: P.label[d],
      conns: e === undefined ? 'No Connections' : connText(EC[e]),
      groups: [...groups.values()],
    };
  }

  // ---------------------------------------------------------------- the details panel

  const details = $('details-body');
  let selection = null; // {s, d} of the pair shown
  let peerShown = null; // the peer whose details are shown: they follow the port filter
  function show(...nodes) {
    peerShown = null;
    details.replaceChildren(...nodes);
    details.parentElement.scrollTop = 0;
  }
  const policyByKey = new Map(D.policies.map((p) => [p.key, p]));
  function policyChip(key) {
    const p = policyByKey.get(key);
    return el('span', { class: 'policy', title: p ? `${p.kind} ${key}${p.file ? ` (${p.file})` : ''}` : key }, key);
  }
  function joinChips(keys) {
    const span = el('span');
    keys.forEach((key, i) => { if (i) span.appendChild(document.createTextNode(', ')); span.appendChild(policyChip(key)); });
    return span;
  }
  /* Some pods of workload k: of the classes at `which` (indexes into its class list). */
  function samplePods(k, which) {
    const names = [];
    let total = 0;
    for (const i of which) {
      total += P.classPods[k][i];
      for (const n of P.classSamples[k][i]) if (names.length < 3) names.push(n);
    }
    return names.join(', ') + (total > names.length ? ` (+${total - names.length} more)` : '');
  }
  const everyClass = (k) => P.classes[k].map((_, i) => i);
  /* NetworkPolicies isolate; cluster-wide tiers select, and their order matters. */
  const selectedBy = (x) => (x.tiers.every((t) => t === 'networkpolicy') ? 'isolated by' : 'selected by (in evaluation order)');
  function sideBlock(x, subjectLabel) {
    const title = `${x.direction === 'ingress' ? 'Ingress' : 'Egress'} of ${subjectLabel}`;
    const box = el('div', { class: 'side' }, el('div', { class: 'title' }, title));
    if (!x.applies) {
      box.appendChild(el('div', {}, 'an address range outside the cluster: no policy applies'));
      return box;
    }
    if (!x.isolating.length) {
      box.appendChild(el('div', {}, `not isolated (no policy selects it for ${x.direction}): all allowed`));
      return box;
    }
    box.appendChild(el('div', {}, `${selectedBy(x)} `, joinChips(x.isolating)));
    const list = el('ul');
    const order = { matches: 0, ports: 1, peer: 2 };
    const sorted = [...x.rules].sort((p, q) => order[p.status] - order[q.status]);
    if (!sorted.some((r) => r.status === 'matches')) list.appendChild(el('li', { class: 'peer' }, 'no rule of these policies matches this peer on any port'));
    const verb = { Allow: 'allows', Deny: 'denies', Pass: 'passes to the next tier' };
    for (const r of sorted) {
      let what = r.status === 'ports' ? 'selects this peer, but its ports cover nothing on this destination'
        : r.status === 'peer' ? 'does not select this peer' : `${verb[r.action]} ${r.conns}`;
      if (r.status === 'matches' && r.decided !== r.conns) {
        what += r.decided === 'No Connections' ? ' (an earlier rule or tier decided these ports)' : ` (decides ${r.decided}; an earlier rule or tier decided the rest)`;
      }
      const tone = r.status !== 'matches' ? r.status : r.action.toLowerCase();
      list.appendChild(el('li', { class: tone, 'data-rule': r.rule },
        el('span', { class: 'rule' }, r.rule), ': ', what, el('span', { class: 'def' }, r.definition)));
    }
    box.appendChild(list);
    box.appendChild(el('div', { class: 'allowed' }, `allowed on this side: ${x.allowed}`));
    return box;
  }
  function showPair(s, d) {
    selection = { s, d };
    const x = explainPair(s, d);
    const allowed = x.conns !== 'No Connections';
    const nodes = [
      el('h3', {}, `${x.src} → ${x.dst}`),
      el('div', { class: `verdict ${allowed ? 'allowed' : 'denied'}` }, allowed ? `Allowed: ${x.conns}` : 'Denied: no connection allowed'),
    ];
    const change = diffAt.get(s * NP + d);
    if (change !== undefined) {
      const c = D.diff[change];
      nodes.push(el('div', { class: 'kv' }, el('b', {}, `${c['diff-type']} since ${D.meta.against}: `), `${c.old} → ${c.new}`));
    }
    x.groups.forEach((g) => {
      if (x.groups.length > 1) {
        nodes.push(el('h4', {}, `${g.sources.length ? samplePods(s, g.sources) : x.src} → ${g.targets.length ? samplePods(d, g.targets) : x.dst}`));
      }
      nodes.push(sideBlock(g.egress, x.src), sideBlock(g.ingress, x.dst));
      if (x.groups.length > 1) nodes.push(el('div', { class: 'kv' }, el('b', {}, 'these pods: '), g.result));
      if (g.resultId === NONE_ID) {
        const blocking = [g.egress, g.ingress].filter((y) => y.applies && y.allowedId === NONE_ID);
        for (const y of blocking) {
          nodes.push(el('div', { class: 'kv' }, el('b', {}, `denied by ${y.direction}: `), `${selectedBy(y)} `, joinChips(y.isolating), ' and nothing is allowed for this peer'));
        }
        if (!blocking.length) nodes.push(el('div', { class: 'kv' }, el('b', {}, 'denied: '), 'each side allows some ports, but no port is allowed by both'));
      }
    });
    if (P.side[s] === WORKLOAD || P.side[d] === WORKLOAD) {
      nodes.push(el('div', { class: 'cli' }, `netfence explain ${D.meta.source} --from ${P.explainAs[s]} --to ${P.explainAs[d]}`));
    }
    show(...nodes);
    graph.highlightPair(s, d);
    matrix.draw();
  }
  function isolationLine(k, direction) {
    const isolated = direction === 'ingress' ? P.isoIn[k] : P.isoOut[k];
    const policies = policyKeys([...new Set(P.classes[k].flatMap((c) => selecting(direction, c)))]);
    const word = direction === 'ingress' ? 'Ingress' : 'Egress';
    if (!isolated) return el('div', { class: 'kv' }, el('b', {}, `${word}: `), 'not isolated: all allowed');
    return el('div', { class: 'kv' }, el('b', {}, `${word}: `), `${isolated === P.pods[k] ? 'isolated' : `${isolated} of ${P.pods[k]} pods isolated`} by `, joinChips(policies));
  }
  function pairList(edgeIndexes, limit = 300) {
    const list = el('ul', { class: 'pairs' });
    for (const e of edgeIndexes.slice(0, limit)) {
      list.appendChild(el('li', { onclick: () => showPair(ES[e], ED[e]) }, `${P.label[ES[e]]} → ${P.label[ED[e]]} : ${connText(EC[e])}`));
    }
    if (edgeIndexes.length > limit) list.appendChild(el('li', {}, `… and ${edgeIndexes.length - limit} more`));
    return list;
  }
  function showPeer(k) {
    const nodes = [el('h3', {}, P.label[k])];
    if (P.side[k] === WORKLOAD) {
      nodes.push(el('div', { class: 'kv' }, el('b', {}, 'namespace: '), D.namespaces[P.ns[k]]));
      nodes.push(el('div', { class: 'kv' }, el('b', {}, 'pods: '), `${P.pods[k]} (${samplePods(k, everyClass(k))})`));
      nodes.push(isolationLine(k, 'ingress'), isolationLine(k, 'egress'));
      if (!P.isoIn[k] && !P.isoOut[k]) nodes.push(el('div', { class: 'verdict denied' }, 'fully open: no policy selects it'));
    } else {
      nodes.push(el('div', { class: 'kv' }, 'an external address range (the address space cut at the policies\u2019 ipBlock edges)'));
    }
    // A range is listed once as a source and once as a destination: both listings count.
    const listings = P.side[k] === WORKLOAD ? [k] : [...Array(NP - NW).keys()].map((i) => NW + i).filter((j) => P.label[j] === P.label[k]);
    const out = listings.flatMap((j) => outEdges[j].filter(passes));
    const ins = listings.flatMap((j) => inEdges[j].filter(passes));
    const on = portAllowed === null ? '' : ` on ${portText}`;
    nodes.push(el('h4', {}, `may open connections${on} to ${plural(out.length, 'peer')}`), pairList(out, 100));
    nodes.push(el('h4', {}, `accepts connections${on} from ${plural(ins.length, 'peer')}`), pairList(ins, 100));
    show(...nodes);
    peerShown = k;
  }
  /* A namespace's pods, those isolated both ways and those not isolated at all. */
  function groupStats(g) {
    const stats = { pods: 0, iso: 0, open: 0 };
    for (const k of groupMembers[g]) {
      stats.pods += P.pods[k];
      stats.iso += P.isoBoth[k];
      if (!P.isoIn[k] && !P.isoOut[k]) stats.open += P.pods[k];
    }
    return stats;
  }
  function showGroup(g) {
    const members = groupMembers[g];
    const nodes = [el('h3', {}, g === EXT ? 'External address ranges' : `namespace ${D.namespaces[g]}`)];
    if (g !== EXT) {
      const { pods, iso, open } = groupStats(g);
      nodes.push(el('div', { class: 'kv' }, el('b', {}, 'workloads: '), `${members.length} (${plural(pods, 'pod')})`));
      nodes.push(el('div', { class: 'kv' }, el('b', {}, 'isolated both ways: '), `${percent(iso, pods)} of pods; not isolated at all: ${percent(open, pods)}`));
    }
    nodes.push(el('button', { type: 'button', onclick: () => graph.toggle(g) }, graph.expanded.has(g) ? 'Collapse in the graph' : 'Expand in the graph'));
    if (g !== EXT) nodes.push(el('button', { type: 'button', onclick: () => matrix.focus(g, -1) }, 'Rows in the matrix'), el('button', { type: 'button', onclick: () => matrix.focus(-1, g) }, 'Columns in the matrix'));
    const list = el('ul', { class: 'pairs' });
    for (const k of members.slice(0, 500)) list.appendChild(el('li', { onclick: () => graph.reveal(k) }, P.label[k]));
    nodes.push(el('h4', {}, 'members'), list);
    show(...nodes);
  }
  function showAggregate(title, edgeIndexes, removed) {
    const nodes = [el('h3', {}, title), el('div', { class: 'kv' }, `${plural(edgeIndexes.length, 'allowed pair')}; click one for its explanation`), pairList(edgeIndexes)];
    if (removed.length) {
      nodes.push(el('h4', {}, `removed since ${D.meta.against}`));
      const list = el('ul', { class: 'pairs' });
      for (const i of removed) list.appendChild(el('li', { onclick: () => showDifference(i) }, `${D.diff[i].src} → ${D.diff[i].dst} : was ${D.diff[i].old}`));
      nodes.push(list);
    }
    show(...nodes);
  }
  function showDifference(i) {
    const c = D.diff[i];
    if (c.s >= 0 && c.d >= 0) { showPair(c.s, c.d); return; }
    show(el('h3', {}, `${c.src} → ${c.dst}`), el('div', { class: 'kv' }, el('b', {}, `${c['diff-type']}: `), `${c.old} → ${c.new}`),
      el('div', { class: 'kv' }, c.note || 'one side no longer exists in this cluster'));
  }

  // ---------------------------------------------------------------- summary and header

  function card(value, label, sub, tone, onclick) {
    const box = el('div', { class: `card ${tone || ''} ${onclick ? 'clickable' : ''}` }, el('div', { class: 'value' }, value), el('div', { class: 'label' }, label));
    if (sub) box.appendChild(el('div', { class: 'sub' }, sub));
    if (onclick) box.addEventListener('click', onclick);
    return box;
  }
  function showExposed() {
    const S = D.summary;
    const list = el('ul', { class: 'pairs' });
    for (const x of S.exposed.slice(0, 500)) {
      list.appendChild(el('li', { onclick: () => graph.reveal(x.peer) }, `${P.label[x.peer]} (${plural(P.pods[x.peer], 'pod')}): ${connText(x.conn)}`));
    }
    show(el('h3', {}, 'Exposed to External'), el('div', { class: 'kv' }, 'workloads that accept connections from some address outside the cluster, with the ports'), list);
  }
  function renderSummary() {
    const S = D.summary, M = D.meta;
    $('source').textContent = M.source + (M.against ? `  (against ${M.against})` : '');
    $('meta').textContent = `generated ${M.generated} by netfence ${M.version}; hostNetwork pods read as ${M.hostNetwork === 'pod' ? 'pods' : 'node traffic'}`;
    document.title = `netfence report: ${M.source}`;
    const cards = [
      card(S.pods.toLocaleString('en'), 'pods', `${plural(S.workloads, 'workload')}, ${plural(S.namespaces, 'namespace')}`),
      card(S.policies.toLocaleString('en'), 'valid policies', `${plural(S.errors, 'error')}, ${plural(S.warnings, 'warning')}`, S.errors ? 'bad' : S.warnings ? 'warn' : 'good', () => setView('findings')),
      card(percent(S.podsIsolatedIngress, S.pods), 'pods isolated for ingress', `egress: ${percent(S.podsIsolatedEgress, S.pods)}; both: ${percent(S.podsIsolatedBoth, S.pods)}`),
      card(S.podsNotIsolated.toLocaleString('en'), 'pods not isolated at all', percent(S.podsNotIsolated, S.pods) + ' of pods', S.podsNotIsolated ? 'bad' : 'good'),
      card(S.exposed.length.toLocaleString('en'), 'workloads exposed to External', `${plural(S.exposedPods, 'pod')}; ${S.exposedAllPorts} on every port`, S.exposedAllPorts ? 'bad' : S.exposed.length ? 'warn' : 'good', showExposed),
      card(S.reachingExternal.toLocaleString('en'), 'workloads reaching External', plural(S.reachingExternalPods, 'pod')),
      card(S.connections.toLocaleString('en'), 'allowed pairs', 'workload or range pairs'),
    ];
    if (S.diff) cards.push(card(`+${S.diff.added} −${S.diff.removed} ~${S.diff.changed}`, `changes since ${M.against}`, 'added, removed, changed pairs', '', () => setView('diff')));
    $('summary').replaceChildren(...cards);
    $('findings-count').textContent = `(${D.findings.length})`;
    $('diff-count').textContent = D.diff ? `(${D.diff.length})` : '';
    $('footer').textContent = `netfence ${M.version} · graph drawn with ${D.library.name} ${D.library.version} (${D.library.license}) · one self-contained file, no network access`;
  }

  // ---------------------------------------------------------------- views

  const VIEWS = ['graph', 'matrix', 'findings', 'diff'];
  function setView(name) {
    for (const button of document.querySelectorAll('.tabs button')) button.classList.toggle('active', button.dataset.view === name);
    for (const key of VIEWS) $(`view-${key}`).classList.toggle('active', key === name);
    if (name === 'graph') graph.activate();
    if (name === 'matrix') matrix.activate();
  }

  // ---------------------------------------------------------------- the graph

  const graph = (function () {
    const EXPAND_ALL_EDGES = 4000, EXPAND_ALL_NODES = 600, COSE_NODES = 350, DENSE_EDGES = 1500;
    const expanded = new Set();
    let cy = null, focus = -1, showExternal = true, built = false;
    const aggregates = new Map();

    function status(k) {
      if (P.side[k] !== WORKLOAD) return 'external';
      if (!P.isoIn[k] && !P.isoOut[k]) return 'open';
      if (P.isoBoth[k] === P.pods[k]) return 'isolated';
      return 'partial';
    }
    const nodeOf = (k) => {
      const g = groupOf(k);
      if (!expanded.has(g)) return `g${g}`;
      return P.side[k] === WORKLOAD ? `p${k}` : `p${rangeNode.get(P.label[k])}`;
    };
    function visible(k) { return showExternal || P.side[k] === WORKLOAD; }

    function elements() {
      aggregates.clear();
      const used = new Set();
      const edges = new Map();
      for (let e = 0; e < NE; e++) {
        if (!passes(e)) continue;
        const s = ES[e], d = ED[e];
        if (!visible(s) || !visible(d)) continue;
        if (focus >= 0 && groupOf(s) !== focus && groupOf(d) !== focus) continue;
        const a = nodeOf(s), b = nodeOf(d);
        if (a === b) continue; // inside a collapsed namespace
        const key = `${a}>${b}`;
        let agg = edges.get(key);
        if (!agg) edges.set(key, (agg = { a, b, edges: [], removed: [] }));
        agg.edges.push(e);
      }
      (D.diff || []).forEach((c, i) => {
        if (c['diff-type'] !== 'removed' || c.s < 0 || c.d < 0 || !visible(c.s) || !visible(c.d)) return;
        if (focus >= 0 && groupOf(c.s) !== focus && groupOf(c.d) !== focus) return;
        const a = nodeOf(c.s), b = nodeOf(c.d);
        if (a === b) return;
        const key = `${a}>${b}`;
        let agg = edges.get(key);
        if (!agg) edges.set(key, (agg = { a, b, edges: [], removed: [] }));
        agg.removed.push(i);
      });
      const out = [];
      let n = 0;
      for (const [key, agg] of edges) {
        used.add(agg.a); used.add(agg.b);
        const id = `e${n++}`;
        const single = agg.edges.length === 1 && !agg.removed.length && agg.a[0] === 'p' && agg.b[0] === 'p';
        if (single) {
          const e = agg.edges[0];
          const change = diffAt.get(ES[e] * NP + ED[e]);
          const classes = [D.conns[EC[e]].all ? 'all' : 'some'];
          if (change !== undefined) classes.push(D.diff[change]['diff-type']);
          out.push({ group: 'edges', data: { id, source: agg.a, target: agg.b, label: connText(EC[e]), edge: e }, classes: classes.join(' ') });
        } else if (!agg.edges.length && agg.removed.length === 1 && agg.a[0] === 'p' && agg.b[0] === 'p') {
          const c = D.diff[agg.removed[0]];
          out.push({ group: 'edges', data: { id, source: agg.a, target: agg.b, label: `removed: ${c.old}`, diff: agg.removed[0] }, classes: 'removed' });
        } else {
          aggregates.set(id, agg);
          const changed = agg.removed.length || agg.edges.some((e) => diffAt.has(ES[e] * NP + ED[e]));
          const label = agg.edges.length ? plural(agg.edges.length, 'pair') : `${agg.removed.length} removed`;
          out.push({ group: 'edges', data: { id, source: agg.a, target: agg.b, label, count: agg.edges.length || 1, agg: key }, classes: `agg${changed ? ' changed' : ''}${agg.edges.length ? '' : ' removed'}` });
        }
      }
      const nodes = [];
      for (let g = 0; g <= EXT; g++) {
        if (g === EXT && !showExternal) continue;
        const members = groupMembers[g];
        if (!members.length) continue;
        if (!expanded.has(g)) {
          const id = `g${g}`;
          if (focus >= 0 && g !== focus && !used.has(id)) continue;
          const { pods, iso, open } = groupStats(g);
          const tone = g === EXT ? 'external' : open === pods ? 'open' : iso === pods ? 'isolated' : 'partial';
          const size = g === EXT ? `${new Set(members.map((k) => P.label[k])).size} ranges` : `${plural(members.length, 'workload')} · ${plural(pods, 'pod')}`;
          nodes.push({ group: 'nodes', data: { id, label: `${groupName(g)}\n${size}`, group: g }, classes: `group ${tone}` });
          continue;
        }
        const parent = `n${g}`;
        const children = [];
        for (const k of members) {
          const id = nodeOf(k);
          if (id !== `p${k}`) continue; // a range's second listing
          if (focus >= 0 && g !== focus && !used.has(id)) continue;
          const label = P.side[k] === WORKLOAD ? `${P.name[k]}\n${P.kind[k]}` : P.name[k];
          children.push({ group: 'nodes', data: { id, parent, label, peer: k }, classes: `peer ${status(k)}` });
        }
        if (!children.length) continue;
        nodes.push({ group: 'nodes', data: { id: parent, label: groupName(g), group: g }, classes: `namespace${g === EXT ? ' external-box' : ''}` }, ...children);
      }
      return nodes.concat(out);
    }

    /* Node sizes from their labels (10px font), so boxes fit their text. */
    function sized(node) {
      const lines = node.data.label.split('\n');
      const big = node.classes.includes('group'); // 12px bold
      node.data.w = Math.max(...lines.map((l) => l.length)) * (big ? 8 : 6.3) + 18;
      node.data.h = lines.length * (big ? 16 : 13) + 12;
      return node;
    }

    /* Namespaces side by side as boxes (shelf packing, in name order, External last) with
     * their members on a grid inside: deterministic, no overlap, and each namespace reads as
     * a block. A graph of collapsed namespaces only is left to the force layout instead. */
    function place(nodes) {
      const children = new Map();
      for (const n of nodes) if (n.data.parent) (children.get(n.data.parent) || children.set(n.data.parent, []).get(n.data.parent)).push(n);
      const boxes = nodes.filter((n) => !n.data.parent).map((n) => {
        const members = children.get(n.data.id) || [];
        if (!members.length) return { n, members, w: n.data.w + 40, h: n.data.h + 40 };
        const cellW = Math.max(...members.map((m) => m.data.w)) + 40, cellH = Math.max(...members.map((m) => m.data.h)) + 45;
        const external = n.data.group === EXT;
        if (!external && members.length >= 3 && members.length <= 8) {
          // On a circle: a straight edge between two members passes no other member.
          const radius = (1.4 * Math.max(cellW, cellH)) / (2 * Math.sin(Math.PI / members.length));
          return { n, members, radius, cellW, cellH, w: 2 * radius + cellW, h: 2 * radius + cellH };
        }
        // External ranges in columns of ten, in address order.
        const cols = external ? Math.ceil(members.length / 10) : Math.ceil(Math.sqrt(members.length * 1.6));
        return { n, members, cols, cellW, cellH, w: cols * cellW, h: Math.ceil(members.length / cols) * cellH };
      });
      const area = boxes.reduce((t, b) => t + (b.w + 60) * (b.h + 80), 0);
      const maxWidth = Math.max(900, Math.sqrt(area) * 1.5);
      let x = 0, y = 0, rowHeight = 0;
      for (const b of boxes) {
        if (x > 0 && x + b.w > maxWidth) { x = 0; y += rowHeight + 80; rowHeight = 0; }
        if (!b.members.length) b.n.position = { x: x + b.w / 2, y: y + b.h / 2 };
        b.members.forEach((m, i) => {
          if (b.radius) {
            const angle = -Math.PI / 2 + (2 * Math.PI * i) / b.members.length;
            m.position = { x: x + b.w / 2 + b.radius * Math.cos(angle), y: y + b.h / 2 + b.radius * Math.sin(angle) };
          } else {
            m.position = { x: x + (i % b.cols) * b.cellW + b.cellW / 2, y: y + Math.floor(i / b.cols) * b.cellH + b.cellH / 2 };
          }
        });
        x += b.w + 60;
        rowHeight = Math.max(rowHeight, b.h);
      }
      return children.size > 0;
    }

    function build() {
      if (!cy) return;
      const elems = elements();
      const nodes = elems.filter((x) => x.group === 'nodes');
      const edgeCount = elems.length - nodes.length;
      const dense = edgeCount > DENSE_EDGES;
      if (dense) for (const x of elems) if (x.group === 'edges') x.classes += ' dense';
      nodes.forEach(sized);
      const grouped = place(nodes);
      cy.startBatch();
      cy.elements().remove();
      cy.add(elems);
      cy.endBatch();
      if (!grouped && nodes.length <= COSE_NODES) {
        cy.layout({ name: 'cose', animate: false, randomize: false, fit: true, padding: 30, nodeDimensionsIncludeLabels: true, idealEdgeLength: () => 120, nodeRepulsion: () => 60000, gravity: 0.4, numIter: dense ? 500 : 1500, componentSpacing: 80 }).run();
      } else {
        cy.fit(cy.nodes(), 30); // positions come with the elements (place)
      }
      const note = [];
      if (dense) note.push(`${edgeCount.toLocaleString('en')} edges: labels show when zoomed in`);
      if (focus < 0 && !expandedAllowed()) note.push('large cluster: double-click a namespace to open it, pick one above, or find a workload');
      $('graph-note').textContent = note.join('; ');
      $('expand-all').disabled = !expandedAllowed();
      built = true;
      if (selection) highlightPair(selection.s, selection.d);
    }
    function expandedAllowed() { return NE <= EXPAND_ALL_EDGES && NP <= EXPAND_ALL_NODES; }

    function highlightPair(s, d) {
      if (!cy || !built) return;
      cy.elements().unselect();
      const a = cy.getElementById(nodeOf(s)), b = cy.getElementById(nodeOf(d));
      a.edgesTo(b).select();
    }
    function reveal(k) {
      const g = groupOf(k);
      if (!showExternal && g === EXT) { showExternal = true; $('graph-external').checked = true; }
      if (focus >= 0 && focus !== g) { focus = -1; $('graph-focus').value = '-1'; }
      setView('graph');
      if (!expanded.has(g)) { expanded.add(g); build(); }
      const node = cy.getElementById(nodeOf(k));
      cy.elements().unselect().removeClass('faded');
      if (node.nonempty()) {
        node.select();
        const near = node.closedNeighborhood();
        cy.elements().not(near).not(near.ancestors()).addClass('faded');
        cy.animate({ center: { eles: node }, zoom: Math.max(cy.zoom(), 1.1) }, { duration: 200 });
      }
      showPeer(k);
    }
    function toggle(g) {
      if (expanded.has(g)) expanded.delete(g); else expanded.add(g);
      build();
      showGroup(g);
    }

    function init() {
      cy = cytoscape({
        container: $('cy'),
        elements: [],
        minZoom: 0.02, maxZoom: 5,
        textureOnViewport: NE > 3000, hideEdgesOnViewport: NE > 3000,
        boxSelectionEnabled: false,
        style: [
          { selector: 'node', style: { label: 'data(label)', 'text-wrap': 'wrap', 'font-size': 10, 'text-valign': 'center', 'text-halign': 'center', shape: 'round-rectangle', width: 'data(w)', height: 'data(h)', 'background-color': '#e2e8f0', 'border-width': 2, 'border-color': '#64748b', color: '#0f172a', 'min-zoomed-font-size': 5 } },
          { selector: 'node.open', style: { 'background-color': '#fee2e2', 'border-color': '#dc2626', 'border-style': 'dashed' } },
          { selector: 'node.isolated', style: { 'background-color': '#dcfce7', 'border-color': '#15803d', 'border-style': 'double', 'border-width': 4 } },
          { selector: 'node.partial', style: { 'background-color': '#fef3c7', 'border-color': '#b45309' } },
          { selector: 'node.external', style: { shape: 'rectangle', 'background-color': '#f3e8ff', 'border-color': '#7e22ce' } },
          { selector: 'node.group', style: { 'font-size': 12, 'font-weight': 'bold', padding: 12, 'border-width': 3 } },
          { selector: ':parent', style: { 'text-valign': 'top', 'text-halign': 'center', 'font-size': 12, 'font-weight': 'bold', 'background-color': '#f1f5f9', 'background-opacity': 0.6, 'border-color': '#94a3b8', 'border-style': 'solid', 'border-width': 1, padding: 14 } },
          { selector: ':parent.external-box', style: { 'background-color': '#faf5ff', 'border-color': '#c084fc' } },
          { selector: 'edge', style: { 'curve-style': 'bezier', 'target-arrow-shape': 'triangle', 'arrow-scale': 0.9, width: 1.6, 'line-color': '#93c5fd', 'target-arrow-color': '#93c5fd', label: 'data(label)', 'font-size': 8, 'text-rotation': 'autorotate', 'text-background-color': '#ffffff', 'text-background-opacity': 0.85, 'text-background-padding': 1, 'min-zoomed-font-size': 7, color: '#1e3a8a', 'text-events': 'yes' } },
          { selector: 'edge.all', style: { 'line-color': '#1e3a8a', 'target-arrow-color': '#1e3a8a', width: 2.2 } },
          { selector: 'edge.some', style: { 'line-color': '#3b82f6', 'target-arrow-color': '#3b82f6' } },
          { selector: 'edge.agg', style: { width: 'mapData(count, 1, 500, 1.5, 9)', 'line-color': '#64748b', 'target-arrow-color': '#64748b', color: '#334155' } },
          { selector: 'edge.added', style: { 'line-color': '#16a34a', 'target-arrow-color': '#16a34a', width: 3 } },
          { selector: 'edge.changed', style: { 'line-color': '#ea580c', 'target-arrow-color': '#ea580c', width: 3 } },
          { selector: 'edge.removed', style: { 'line-color': '#dc2626', 'target-arrow-color': '#dc2626', 'line-style': 'dashed', width: 2.5, color: '#b91c1c' } },
          { selector: 'edge.dense', style: { 'curve-style': 'haystack', 'haystack-radius': 0, opacity: 0.45 } },
          { selector: '.faded', style: { opacity: 0.12 } },
          { selector: 'node:selected', style: { 'border-color': '#f59e0b', 'border-width': 5 } },
          { selector: 'edge:selected', style: { 'line-color': '#f59e0b', 'target-arrow-color': '#f59e0b', width: 4, 'z-index': 10 } },
        ],
      });
      cy.on('tap', 'edge', (event) => {
        const data = event.target.data();
        if (data.edge !== undefined) showPair(ES[data.edge], ED[data.edge]);
        else if (data.diff !== undefined) showDifference(data.diff);
        else {
          const agg = aggregates.get(data.id);
          const name = (id) => (id[0] === 'g' ? groupName(Number(id.slice(1))) : P.label[Number(id.slice(1))]);
          showAggregate(`${name(agg.a)} → ${name(agg.b)}`, agg.edges, agg.removed);
        }
      });
      cy.on('tap', 'node', (event) => {
        const data = event.target.data();
        if (data.peer !== undefined) { showPeer(data.peer); return; }
        showGroup(data.group);
      });
      cy.on('dbltap', 'node', (event) => {
        const data = event.target.data();
        if (data.group !== undefined) toggle(data.group);
      });
      cy.on('tap', (event) => { if (event.target === cy) cy.elements().removeClass('faded'); });
      const small = NE <= EXPAND_ALL_EDGES && NP <= 150;
      if (small) for (let g = 0; g <= EXT; g++) expanded.add(g);
      build();
    }
    function activate() {
      if (!cy) init();
      else cy.resize();
    }
    function setFocus(g) {
      focus = g;
      if (g >= 0) expanded.add(g);
      build();
    }
    return {
      expanded, activate, build, highlightPair, reveal, toggle, setFocus,
      get cy() { return cy; },
      setExternal(on) { showExternal = on; build(); },
      expandAll() { if (expandedAllowed()) { for (let g = 0; g <= EXT; g++) expanded.add(g); build(); } },
      collapseAll() { expanded.clear(); build(); },
      fit() { if (cy) cy.fit(undefined, 30); },
      /* Where the edge from peer s to peer d is drawn, in page coordinates (for tests). */
      edgePoint(s, d) {
        const edge = cy.getElementById(nodeOf(s)).edgesTo(cy.getElementById(nodeOf(d)));
        if (edge.empty()) return null;
        const p = edge.renderedMidpoint(), rect = cy.container().getBoundingClientRect();
        return { x: rect.left + p.x, y: rect.top + p.y };
      },
    };
  })();

  // ---------------------------------------------------------------- the matrix

  const matrix = (function () {
    const LABEL_W = 240, LABEL_H = 170;
    const wrap = $('matrix'), canvas = $('matrix-canvas'), scroller = $('matrix-scroller'), spacer = $('matrix-spacer'), tip = $('matrix-tip');
    const ctx = canvas.getContext('2d');
    let grouped = NP > 150, nonEmpty = false, srcGroup = -1, dstGroup = -1;
    let rowsList = [], colsList = [], cell = 16, counts = null, totals = null, active = false;

    function compute() {
      if (grouped) {
        const rowGroups = new Set(), colGroups = new Set();
        for (let k = 0; k < NP; k++) {
          if (P.side[k] !== DESTINATION && (srcGroup < 0 || groupOf(k) === srcGroup)) rowGroups.add(groupOf(k));
          if (P.side[k] !== SOURCE && (dstGroup < 0 || groupOf(k) === dstGroup)) colGroups.add(groupOf(k));
        }
        rowsList = [...rowGroups].sort((a, b) => a - b);
        colsList = [...colGroups].sort((a, b) => a - b);
        const size = EXT + 1;
        counts = new Float64Array(size * size);
        totals = new Float64Array(size * size);
        const sources = new Float64Array(size), targets = new Float64Array(size);
        for (let k = 0; k < NP; k++) {
          if (P.side[k] !== DESTINATION) sources[groupOf(k)]++;
          if (P.side[k] !== SOURCE) targets[groupOf(k)]++;
        }
        for (let a = 0; a < size; a++) {
          for (let b = 0; b < size; b++) {
            let total = sources[a] * targets[b];
            if (a === b) total = a === EXT ? 0 : total - sources[a]; // no self pairs, no range pairs
            totals[a * size + b] = total;
          }
        }
        for (let e = 0; e < NE; e++) if (passes(e)) counts[groupOf(ES[e]) * size + groupOf(ED[e])]++;
        if (nonEmpty) {
          rowsList = rowsList.filter((a) => colsList.some((b) => counts[a * size + b]));
          colsList = colsList.filter((b) => rowsList.some((a) => counts[a * size + b]));
        }
        cell = fitCell(rowsList.length, colsList.length, 22, 40);
      } else {
        rowsList = [], colsList = [];
        for (let k = 0; k < NP; k++) {
          if (P.side[k] !== DESTINATION && (srcGroup < 0 || groupOf(k) === srcGroup)) rowsList.push(k);
          if (P.side[k] !== SOURCE && (dstGroup < 0 || groupOf(k) === dstGroup)) colsList.push(k);
        }
        if (nonEmpty) {
          const cols = new Set(colsList), rowSet = new Set(rowsList);
          const liveRows = new Set(), liveCols = new Set();
          for (let e = 0; e < NE; e++) {
            if (passes(e) && rowSet.has(ES[e]) && cols.has(ED[e])) { liveRows.add(ES[e]); liveCols.add(ED[e]); }
          }
          rowsList = rowsList.filter((k) => liveRows.has(k));
          colsList = colsList.filter((k) => liveCols.has(k));
        }
        cell = fitCell(rowsList.length, colsList.length, 14, 34);
      }
      spacer.style.width = `${LABEL_W + colsList.length * cell}px`;
      spacer.style.height = `${LABEL_H + rowsList.length * cell}px`;
      const total = rowsList.length * colsList.length;
      $('matrix-note').textContent = `${rowsList.length.toLocaleString('en')} × ${colsList.length.toLocaleString('en')} ${grouped ? 'namespaces' : 'peers'}${total ? '' : ': nothing to show'}`;
    }

    function cellState(r, c) {
      if (grouped) {
        const size = EXT + 1, a = rowsList[r], b = colsList[c];
        const total = totals[a * size + b];
        if (!total) return { fill: null };
        return { fill: heat(counts[a * size + b] / total) };
      }
      const s = rowsList[r], d = colsList[c];
      if (s === d || (P.side[s] !== WORKLOAD && P.side[d] !== WORKLOAD)) return { fill: null };
      const e = edgeAt.get(s * NP + d);
      const change = diffAt.get(s * NP + d);
      let fill = '#f1f5f9';
      if (e !== undefined && passes(e)) fill = portAllowed ? '#2563eb' : D.conns[EC[e]].all ? '#1e3a8a' : '#60a5fa';
      return { fill, change: change === undefined ? null : D.diff[change]['diff-type'] };
    }
    const changeColour = { added: '#16a34a', removed: '#dc2626', changed: '#ea580c' };

    /* Cells as large as the view allows, within [least, most] pixels. */
    function fitCell(rowCount, colCount, least, most) {
      const w = (wrap.clientWidth || 800) - LABEL_W - 20, h = (wrap.clientHeight || 500) - LABEL_H - 20;
      const fits = Math.floor(Math.min(w / Math.max(1, colCount), h / Math.max(1, rowCount)));
      return Math.max(least, Math.min(most, fits));
    }
    function draw() {
      if (!active) return;
      const ratio = window.devicePixelRatio || 1;
      const W = wrap.clientWidth, H = wrap.clientHeight;
      if (canvas.width !== Math.round(W * ratio) || canvas.height !== Math.round(H * ratio)) {
        canvas.width = Math.round(W * ratio); canvas.height = Math.round(H * ratio);
        canvas.style.width = `${W}px`; canvas.style.height = `${H}px`;
      }
      ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
      ctx.clearRect(0, 0, W, H);
      const sx = scroller.scrollLeft, sy = scroller.scrollTop;
      const r0 = Math.max(0, Math.floor(sy / cell)), r1 = Math.min(rowsList.length, Math.ceil((sy + H - LABEL_H) / cell));
      const c0 = Math.max(0, Math.floor(sx / cell)), c1 = Math.min(colsList.length, Math.ceil((sx + W - LABEL_W) / cell));
      const gap = cell > 12 ? 1 : 0;
      for (let r = r0; r < r1; r++) {
        const y = LABEL_H + r * cell - sy;
        for (let c = c0; c < c1; c++) {
          const x = LABEL_W + c * cell - sx;
          const st = cellState(r, c);
          if (st.fill === null) {
            ctx.fillStyle = '#ffffff'; ctx.fillRect(x, y, cell - gap, cell - gap);
            ctx.strokeStyle = '#e2e8f0'; ctx.beginPath(); ctx.moveTo(x, y + cell - gap); ctx.lineTo(x + cell - gap, y); ctx.stroke();
            continue;
          }
          ctx.fillStyle = st.fill; ctx.fillRect(x, y, cell - gap, cell - gap);
          if (st.change) { ctx.strokeStyle = changeColour[st.change]; ctx.lineWidth = 2; ctx.strokeRect(x + 1, y + 1, cell - gap - 2, cell - gap - 2); ctx.lineWidth = 1; }
        }
      }
      // namespace boundaries
      if (!grouped) {
        ctx.strokeStyle = '#475569';
        const right = Math.min(W, LABEL_W + colsList.length * cell - sx), bottom = Math.min(H, LABEL_H + rowsList.length * cell - sy);
        for (let r = Math.max(1, r0); r < r1; r++) {
          if (groupOf(rowsList[r]) !== groupOf(rowsList[r - 1])) { const y = LABEL_H + r * cell - sy - 0.5; ctx.beginPath(); ctx.moveTo(LABEL_W, y); ctx.lineTo(right, y); ctx.stroke(); }
        }
        for (let c = Math.max(1, c0); c < c1; c++) {
          if (groupOf(colsList[c]) !== groupOf(colsList[c - 1])) { const x = LABEL_W + c * cell - sx - 0.5; ctx.beginPath(); ctx.moveTo(x, LABEL_H); ctx.lineTo(x, bottom); ctx.stroke(); }
        }
      }
      // the selected pair
      if (!grouped && selection) {
        const r = rowsList.indexOf(selection.s), c = colsList.indexOf(selection.d);
        if (r >= 0 && c >= 0) {
          ctx.strokeStyle = '#f59e0b'; ctx.lineWidth = 3;
          ctx.strokeRect(LABEL_W + c * cell - sx - 1, LABEL_H + r * cell - sy - 1, cell + 1, cell + 1);
          ctx.lineWidth = 1;
        }
      }
      // labels
      ctx.fillStyle = '#ffffff';
      ctx.fillRect(0, 0, LABEL_W, H); ctx.fillRect(0, 0, W, LABEL_H);
      ctx.fillStyle = '#0f172a';
      ctx.font = `${grouped ? 12 : 11}px "DejaVu Sans", sans-serif`;
      ctx.textBaseline = 'middle';
      ctx.save();
      ctx.beginPath(); ctx.rect(0, LABEL_H, LABEL_W, H - LABEL_H); ctx.clip();
      ctx.textAlign = 'right';
      for (let r = r0; r < r1; r++) ctx.fillText(fit(label(rowsList[r]), LABEL_W - 10), LABEL_W - 6, LABEL_H + r * cell - sy + cell / 2);
      ctx.restore();
      ctx.save();
      ctx.beginPath(); ctx.rect(LABEL_W, 0, W - LABEL_W, LABEL_H); ctx.clip();
      ctx.textAlign = 'left';
      for (let c = c0; c < c1; c++) {
        ctx.save();
        ctx.translate(LABEL_W + c * cell - sx + cell / 2, LABEL_H - 6);
        ctx.rotate(-Math.PI / 2);
        ctx.fillText(fit(label(colsList[c]), LABEL_H - 12), 0, 0);
        ctx.restore();
      }
      ctx.restore();
      ctx.fillStyle = '#64748b';
      ctx.font = '12px "DejaVu Sans", sans-serif';
      ctx.textAlign = 'left';
      ctx.fillText('sources ↓', 8, LABEL_H - 28);
      ctx.fillText('destinations →', 8, LABEL_H - 12);
    }
    const label = (x) => (grouped ? groupName(x) : P.side[x] === WORKLOAD ? P.label[x] : P.name[x]);
    /* The text shortened in its middle to fit `width` pixels (both ends of a name or a
     * range say the most). */
    function fit(text, width) {
      if (ctx.measureText(text).width <= width) return text;
      const cut = (n) => text.slice(0, Math.ceil(n / 2)) + '…' + text.slice(text.length - Math.floor(n / 2));
      let lo = 0, hi = text.length;
      while (lo < hi) { const mid = (lo + hi + 1) >> 1; if (ctx.measureText(cut(mid)).width <= width) lo = mid; else hi = mid - 1; }
      return cut(lo);
    }
    function at(event) {
      const rect = scroller.getBoundingClientRect();
      const x = event.clientX - rect.left + scroller.scrollLeft - LABEL_W;
      const y = event.clientY - rect.top + scroller.scrollTop - LABEL_H;
      if (event.clientX - rect.left < LABEL_W || event.clientY - rect.top < LABEL_H) return null;
      const r = Math.floor(y / cell), c = Math.floor(x / cell);
      if (r < 0 || c < 0 || r >= rowsList.length || c >= colsList.length) return null;
      return { r, c };
    }
    function describe(r, c) {
      if (grouped) {
        const size = EXT + 1, a = rowsList[r], b = colsList[c];
        const total = totals[a * size + b];
        return `${groupName(a)} → ${groupName(b)}\n${total ? `${counts[a * size + b].toLocaleString('en')} of ${total.toLocaleString('en')} pairs allowed${portAllowed ? ' on the port' : ''}` : 'no pairs'}`;
      }
      const s = rowsList[r], d = colsList[c];
      const e = edgeAt.get(s * NP + d);
      return `${P.label[s]} → ${P.label[d]}\n${e === undefined ? 'No Connections' : connText(EC[e])}`;
    }
    scroller.addEventListener('scroll', () => requestAnimationFrame(draw));
    scroller.addEventListener('mousemove', (event) => {
      const hit = at(event);
      if (!hit) { tip.hidden = true; return; }
      tip.textContent = describe(hit.r, hit.c);
      tip.hidden = false;
      const rect = wrap.getBoundingClientRect();
      const x = event.clientX - rect.left, y = event.clientY - rect.top;
      tip.style.left = `${Math.min(x + 14, rect.width - 320)}px`;
      tip.style.top = `${y + 14}px`;
    });
    scroller.addEventListener('mouseleave', () => { tip.hidden = true; });
    scroller.addEventListener('click', (event) => {
      const hit = at(event);
      if (!hit) return;
      if (grouped) { focus(rowsList[hit.r], colsList[hit.c], false); return; }
      const s = rowsList[hit.r], d = colsList[hit.c];
      if (s === d || (P.side[s] !== WORKLOAD && P.side[d] !== WORKLOAD)) return;
      showPair(s, d);
    });
    window.addEventListener('resize', () => requestAnimationFrame(draw));

    function focus(src, dst, keepGrouping) {
      srcGroup = src; dstGroup = dst;
      if (!keepGrouping) grouped = false;
      $('matrix-src').value = String(src); $('matrix-dst').value = String(dst);
      $('matrix-grouped').checked = grouped;
      setView('matrix');
      refresh();
    }
    function refresh() { compute(); scroller.scrollTop = 0; scroller.scrollLeft = 0; draw(); }
    function cellCentre(s, d) {
      // For tests and links: scroll the pair into view and return its centre on the page.
      const r = rowsList.indexOf(s), c = colsList.indexOf(d);
      if (grouped || r < 0 || c < 0) return null;
      scroller.scrollTop = Math.max(0, r * cell - 40); scroller.scrollLeft = Math.max(0, c * cell - 40);
      draw();
      const rect = scroller.getBoundingClientRect();
      return { x: rect.left + LABEL_W + c * cell - scroller.scrollLeft + cell / 2, y: rect.top + LABEL_H + r * cell - scroller.scrollTop + cell / 2 };
    }
    function init() {
      for (const id of ['matrix-src', 'matrix-dst']) {
        const select = $(id);
        select.appendChild(option(-1, 'all namespaces'));
        D.namespaces.forEach((name, g) => { if (groupMembers[g].length) select.appendChild(option(g, name)); });
        if (groupMembers[EXT].length) select.appendChild(option(EXT, 'External'));
        select.addEventListener('change', () => { if (id === 'matrix-src') srcGroup = Number(select.value); else dstGroup = Number(select.value); refresh(); });
      }
      $('matrix-grouped').checked = grouped;
      $('matrix-grouped').addEventListener('change', (event) => { grouped = event.target.checked; refresh(); });
      $('matrix-nonempty').addEventListener('change', (event) => { nonEmpty = event.target.checked; refresh(); });
      compute();
    }
    init();
    return {
      draw, refresh, focus, cellCentre,
      activate() { active = true; compute(); draw(); }, // sizes need the view shown
      get grouped() { return grouped; },
      /* The labels of the rows and columns shown (for tests). */
      shown() { return { rows: rowsList.map(label), cols: colsList.map(label) }; },
    };
  })();

  // ---------------------------------------------------------------- legends

  function swatch(fill, border, text, dashed) {
    const box = el('span', { class: 'swatch' });
    box.style.background = fill;
    box.style.borderColor = border || fill;
    if (dashed) box.style.borderStyle = 'dashed';
    return el('span', {}, box, text);
  }
  $('graph-legend').replaceChildren(
    swatch('#dcfce7', '#15803d', 'isolated both ways'), swatch('#fef3c7', '#b45309', 'partly isolated'),
    swatch('#fee2e2', '#dc2626', 'fully open (no policy selects it)', true), swatch('#f3e8ff', '#7e22ce', 'external range'),
    swatch('#1e3a8a', null, 'all connections'), swatch('#3b82f6', null, 'some ports'), swatch('#64748b', null, 'aggregated (click for the pairs)'),
    ...(D.diff ? [swatch('#16a34a', null, 'added'), swatch('#ea580c', null, 'changed'), swatch('#dc2626', null, 'removed', true)] : []),
    el('span', {}, 'double-click a namespace to open or close it; scroll to zoom'));
  $('matrix-legend').replaceChildren(
    swatch('#1e3a8a', null, 'all connections'), swatch('#60a5fa', null, 'some ports'), swatch('#2563eb', null, 'allows the port filter'), swatch('#f1f5f9', '#cbd5e1', 'none'),
    swatch(heat(0.05), null, 'namespace blocks: share of allowed pairs'),
    ...(D.diff ? [swatch('#ffffff', '#16a34a', 'added'), swatch('#ffffff', '#ea580c', 'changed'), swatch('#ffffff', '#dc2626', 'removed')] : []),
    el('span', {}, 'rows: sources, columns: destinations; click a namespace block to open it'));

  // ---------------------------------------------------------------- findings and diff tables

  function renderFindings() {
    const severity = $('findings-severity').value, code = $('findings-code').value, text = $('findings-text').value.toLowerCase();
    const body = $('findings').tBodies[0];
    const shown = D.findings.filter((f) => (!severity || f.severity === severity) && (!code || f.code === code)
      && (!text || `${f.object} ${f.path} ${f.message} ${f.file}`.toLowerCase().includes(text)));
    const LIMIT = 1000;
    body.replaceChildren(...shown.slice(0, LIMIT).map((f) => el('tr', {},
      el('td', { class: f.severity }, f.severity), el('td', { class: 'mono' }, f.code), el('td', {}, f.object), el('td', { class: 'mono' }, f.path), el('td', {}, f.message), el('td', { class: 'mono' }, f.file))));
    $('findings-note').textContent = `${shown.length} of ${D.findings.length}${shown.length > LIMIT ? `; first ${LIMIT} shown` : ''}`;
  }
  function renderDiff() {
    const body = $('diff').tBodies[0];
    if (!D.diff) {
      body.replaceChildren(el('tr', {}, el('td', { colspan: '6' }, 'Run `netfence report PATH --against OLD` to see what a change of manifests does to connectivity.')));
      return;
    }
    const change = $('diff-change').value;
    const LIMIT = 2000;
    const shown = D.diff.map((c, i) => [c, i]).filter(([c]) => !change || c['diff-type'] === change);
    body.replaceChildren(...shown.slice(0, LIMIT).map(([c, i]) => el('tr', { class: 'clickable', onclick: () => showDifference(i) },
      el('td', { class: c['diff-type'] }, c['diff-type']), el('td', {}, c.src), el('td', {}, c.dst), el('td', { class: 'mono' }, c.old), el('td', { class: 'mono' }, c.new), el('td', {}, c.note))));
    $('diff-note').textContent = `${shown.length} of ${D.diff.length} changes since ${D.meta.against}${shown.length > LIMIT ? `; first ${LIMIT} shown` : ''}`;
  }

  // ---------------------------------------------------------------- wiring

  function init() {
    renderSummary();
    const codes = [...new Set(D.findings.map((f) => f.code))].sort();
    $('findings-code').replaceChildren(option('', 'all'), ...codes.map((c) => option(c, c)));
    for (const id of ['findings-severity', 'findings-code', 'findings-text']) $(id).addEventListener('input', renderFindings);
    $('diff-change').addEventListener('input', renderDiff);
    renderFindings();
    renderDiff();
    for (const button of document.querySelectorAll('.tabs button')) button.addEventListener('click', () => setView(button.dataset.view));
    const names = $('peer-names');
    const seen = new Set();
    for (let k = 0; k < NP && names.childElementCount < 5000; k++) if (!seen.has(P.label[k])) { seen.add(P.label[k]); names.appendChild(option(P.label[k], '')); }
    $('search-form').addEventListener('submit', (event) => {
      event.preventDefault();
      const query = $('search').value.trim().toLowerCase();
      if (!query) return;
      const hits = [];
      for (let k = 0; k < NP; k++) if (P.label[k].toLowerCase().includes(query) && (P.side[k] === WORKLOAD || rangeNode.get(P.label[k]) === k)) hits.push(k);
      const exact = hits.find((k) => P.label[k].toLowerCase() === query);
      if (exact !== undefined || hits.length === 1) { graph.reveal(exact !== undefined ? exact : hits[0]); return; }
      const list = el('ul', { class: 'pairs' });
      for (const k of hits.slice(0, 200)) list.appendChild(el('li', { onclick: () => graph.reveal(k) }, P.label[k]));
      show(el('h3', {}, `${plural(hits.length, 'match')} for “${query}”`), list);
    });
    const focusSelect = $('graph-focus');
    focusSelect.appendChild(option(-1, 'all'));
    D.namespaces.forEach((name, g) => { if (groupMembers[g].length) focusSelect.appendChild(option(g, name)); });
    focusSelect.addEventListener('change', () => graph.setFocus(Number(focusSelect.value)));
    $('graph-external').addEventListener('change', (event) => graph.setExternal(event.target.checked));
    $('expand-all').addEventListener('click', () => graph.expandAll());
    $('collapse-all').addEventListener('click', () => graph.collapseAll());
    $('fit').addEventListener('click', () => graph.fit());
    const portInput = $('port');
    portInput.addEventListener('change', () => {
      const query = parsePort(portInput.value);
      portInput.classList.toggle('invalid', query === undefined);
      if (query === undefined) return;
      portAllowed = query === null ? null : D.conns.map((_, id) => connHas(id, query));
      portText = portInput.value.trim();
      graph.build();
      matrix.refresh();
      if (peerShown !== null) showPeer(peerShown);
    });
    setView('graph');
  }

  // For tests and for scripting the page from the browser's console.
  window.netfenceReport = {
    data: D, explainPair, explainPoints, showPair, graph, matrix, setView,
    peer: (label, side) => {
      for (let k = 0; k < NP; k++) if (P.label[k] === label && (side === undefined || P.side[k] === side || P.side[k] === WORKLOAD)) return k;
      return -1;
    },
  };
  init();
})();
