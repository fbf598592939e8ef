"""Rendering a tree: a rich Tree for terminals, and a self-contained html page.

The page has no network dependency: CSS, JS, the tree's data (JSON) and the
plots (SVG drawn here, in Python) are all inline. Its script builds the node
list from the embedded data, with native ``<details>`` elements to expand and
collapse nodes.
"""
from __future__ import annotations

import html
import json
from typing import Any

from trex.search.hashing import tree_hash, tree_to_dict
from trex.search.tree import Node, SearchTree, is_number

STATUS_STYLE = {
    "proposed": "grey50", "running": "cyan", "trained": "blue", "evaluated": "green", "failed": "red",
    "rejected": "magenta", "pruned": "yellow", "abandoned": "dark_orange",
}


# What a person scans a plan for first; other scalar fields follow alphabetically.
_KEY_FIELDS = {"learning_rate": "lr", "lora_rank": "r", "target_modules": "targets", "max_steps": "steps",
               "epochs": "epochs", "lr_schedule": "sched", "continue_from_parent": "continue"}


def _short(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    if isinstance(v, (list, tuple)):
        return ",".join(str(x).removesuffix("_proj") for x in v)
    return str(v)


def data_summary(recipe: Any) -> str:
    """A recipe in a few words, only where it differs from a task's train split as is:
    ``data=train+addition:0.1 rows=256 clean=0.2@n3``."""
    if not isinstance(recipe, dict):
        return ""
    sources = recipe.get("sources") or []
    total = sum(float(x.get("weight", 1.0)) for x in sources if isinstance(x, dict)) or 1.0
    names = []
    for x in sources:
        if not isinstance(x, dict):
            continue
        uri = str(x.get("uri", ""))
        name = uri.rsplit("/", 1)[-1] if uri.startswith(("task:", "pool:")) else uri
        share = float(x.get("weight", 1.0)) / total
        names.append(name if len(sources) == 1 or name == "train" else f"{name}:{share:.2g}")
    parts = [] if names == ["train"] else ["data=" + "+".join(names)]
    if recipe.get("max_rows"):
        parts.append(f"rows={recipe['max_rows']}")
    if recipe.get("dedup") is False:
        parts.append("dedup=off")
    if recipe.get("balance_labels"):
        parts.append("balanced")
    if recipe.get("prompt_template") not in (None, "{prompt}"):
        parts.append(f"template={recipe['prompt_template']!r}")
    clean = recipe.get("clean")
    if isinstance(clean, dict):
        parts.append(f"clean={clean.get('fraction')}@{clean.get('node')}")
    return " ".join(parts)


def plan_summary(plan: Any, limit: int = 60) -> str:
    if not isinstance(plan, dict) or not plan:
        return ""
    parts = [f"{short}={_short(plan[k])}" for k, short in _KEY_FIELDS.items()
             if k in plan and plan[k] not in (None, False)]
    data = data_summary(plan.get("data"))
    if data:
        parts.append(data)
        limit += len(data)  # the data edits are what a data search is read for: never cut
    parts += [f"{k}={v}" for k, v in sorted(plan.items())
              if k not in _KEY_FIELDS and not isinstance(v, (dict, list))]
    s = " ".join(parts)
    return s if len(s) <= limit else s[: limit - 1] + "…"


def _fmt_score(x: Any) -> str:
    return f"{x:.4g}" if isinstance(x, (int, float)) and not isinstance(x, bool) else "-"


def node_label(tree: SearchTree, n: Node) -> str:
    star = " ★" if n.node_id == tree.best_node_id else ""
    held = tree.heldout.get(n.node_id)
    test = f" test={_fmt_score(held.score)}" if held is not None else ""
    why = f" infeasible ({n.infeasible})" if n.infeasible else ""
    return (f"{n.node_id}{star} [{n.operator}] {n.status} val={_fmt_score(n.score)}{test}{why} "
            f"{plan_summary(n.plan)}").rstrip()


def rich_tree(tree: SearchTree):
    from rich.markup import escape
    from rich.tree import Tree

    best = tree.best
    root = Tree(f"[bold]{escape(tree.search_id or '(search)')}[/] task={escape(tree.task)} "
                f"status={tree.status} nodes={len(tree.nodes)} best="
                f"{escape(best.node_id) if best else '-'} (val {_fmt_score(best.score if best else None)}, "
                f"test {_fmt_score(tree.test_score)})")
    stack: list[tuple[str | None, Any]] = [(None, root)]
    while stack:
        nid, branch = stack.pop()
        kids = tree.children.get(nid, ())
        subs = []
        for c in kids:
            n = tree.nodes[c]
            style = STATUS_STYLE.get(n.status, "white")
            subs.append((c, branch.add(f"[{style}]{escape(node_label(tree, n))}[/]")))
        stack.extend(reversed(subs))
    return root


# ------------------------------------------------------------------ svg
def svg_line_chart(points: list[tuple[float, float]], title: str, xlabel: str, ylabel: str,
                   width: int = 520, height: int = 260) -> str:
    """A step chart of ``points`` as one inline SVG element (no scripts, no external fonts)."""
    pad_l, pad_r, pad_t, pad_b = 56, 16, 28, 40
    w, h = width - pad_l - pad_r, height - pad_t - pad_b
    esc = html.escape
    parts = [f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-label="{esc(title)}">',
             f'<text x="{width / 2:.0f}" y="18" text-anchor="middle" class="t">{esc(title)}</text>',
             f'<rect x="{pad_l}" y="{pad_t}" width="{w}" height="{h}" class="frame"/>']
    pts = [(float(x), float(y)) for x, y in points if is_number(x) and is_number(y)]
    if not pts:
        parts.append(f'<text x="{width / 2:.0f}" y="{height / 2:.0f}" text-anchor="middle">no scores yet</text>')
    else:
        x0, x1 = min(p[0] for p in pts), max(p[0] for p in pts)
        y0, y1 = min(p[1] for p in pts), max(p[1] for p in pts)
        if x1 == x0:
            x1 = x0 + 1
        if y1 == y0:
            y0, y1 = y0 - 0.5, y1 + 0.5
        sx = lambda x: pad_l + (x - x0) / (x1 - x0) * w  # noqa: E731
        sy = lambda y: pad_t + h - (y - y0) / (y1 - y0) * h  # noqa: E731
        path, prev = [], None
        for x, y in pts:
            if prev is None:
                path.append(f"M{sx(x):.1f},{sy(y):.1f}")
            else:
                path.append(f"L{sx(x):.1f},{sy(prev):.1f}L{sx(x):.1f},{sy(y):.1f}")
            prev = y
        parts.append(f'<path d="{"".join(path)}" class="line"/>')
        for x, y in pts[-200:]:
            parts.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2.5" class="dot"/>')
        for v, yy in ((y0, pad_t + h), (y1, pad_t)):
            parts.append(f'<text x="{pad_l - 6}" y="{yy + 4:.0f}" text-anchor="end" class="a">{v:.4g}</text>')
        for v, xx in ((x0, pad_l), (x1, pad_l + w)):
            parts.append(f'<text x="{xx:.0f}" y="{pad_t + h + 16}" text-anchor="middle" class="a">{v:.4g}</text>')
    parts.append(f'<text x="{pad_l + w / 2:.0f}" y="{height - 6}" text-anchor="middle" class="a">{esc(xlabel)}</text>')
    parts.append(f'<text x="14" y="{pad_t + h / 2:.0f}" text-anchor="middle" class="a" '
                 f'transform="rotate(-90 14 {pad_t + h / 2:.0f})">{esc(ylabel)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def best_curves(tree: SearchTree) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
    by_trials = [(p.trials, p.best_score) for p in tree.history if p.best_score is not None]
    by_compute = [(p.compute_seconds, p.best_score) for p in tree.history if p.best_score is not None]
    return by_trials, by_compute


# ------------------------------------------------------------------ html
_CSS = """
body{font:14px/1.4 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1d232a;background:#f6f7f9}
header{background:#1d3557;color:#fff;padding:12px 20px}header h1{margin:0;font-size:20px}
header .meta{opacity:.85;font-size:13px;margin-top:4px}main{padding:12px 20px}
.charts{display:flex;flex-wrap:wrap;gap:12px;margin-bottom:12px}.chart{background:#fff;border:1px solid #d0d5dc;border-radius:6px}
.chart .t{font-weight:600;font-size:13px}.chart .a{font-size:11px;fill:#555}.chart .frame{fill:none;stroke:#ccd}
.chart .line{fill:none;stroke:#2a9d8f;stroke-width:2}.chart .dot{fill:#1d3557}
.toolbar{margin:8px 0}.toolbar button{margin-right:6px}
ul.tree{list-style:none;padding-left:18px;margin:0}ul.tree.top{padding-left:0}
li.node>details>summary{cursor:pointer;padding:2px 4px;border-radius:4px}
details.info{margin-left:22px}details.info>summary{cursor:pointer;color:#1d3557;font-size:12px}.kids{color:#888;font-size:12px}
li.node>details>summary:hover{background:#e8eef5}
.badge{display:inline-block;font-size:11px;padding:0 6px;border-radius:8px;color:#fff;margin-right:4px}
.s-proposed{background:#8d99ae}.s-running{background:#219ebc}.s-trained{background:#3a86ff}.s-evaluated{background:#2a9d8f}
.s-failed{background:#e63946}.s-rejected{background:#9d4edd}.s-pruned{background:#e9c46a;color:#222}.s-abandoned{background:#f4a261}
.op{color:#555;font-size:12px}.score{font-weight:600}.best{color:#d4a017}.infeasible{color:#b03030;font-size:12px}.plan{color:#555;font-size:12px}
.body{margin:4px 0 8px 22px;padding:8px;background:#fff;border:1px solid #e0e4ea;border-radius:6px}
.body h4{margin:6px 0 2px;font-size:12px;text-transform:uppercase;color:#666}
pre{background:#f1f3f5;padding:6px;border-radius:4px;overflow:auto;max-height:240px;margin:0}
table.kv td{padding:0 8px 0 0}.insights li{margin-left:16px}
"""

_JS = r"""
(function(){
  var data = JSON.parse(document.getElementById('tree-data').textContent);
  var nodes = {}; data.nodes.forEach(function(n){ nodes[n.node_id] = n; });
  function el(tag, cls, text){ var e=document.createElement(tag); if(cls) e.className=cls;
    if(text!==undefined && text!==null) e.textContent=String(text); return e; }
  function fmt(x){ return (typeof x==='number') ? (Math.abs(x)>=1e4||(x!==0&&Math.abs(x)<1e-3) ? x.toExponential(3) : +x.toPrecision(4)) : '-'; }
  function planSummary(p){ var ks=Object.keys(p||{}).sort(); return ks.filter(function(k){return typeof p[k]!=='object';})
    .map(function(k){return k+'='+p[k];}).join(' ').slice(0,80); }
  function kv(obj){ var t=el('table','kv'); Object.keys(obj).sort().forEach(function(k){ var r=el('tr');
    r.appendChild(el('td','',k)); r.appendChild(el('td','',fmt(obj[k]))); t.appendChild(r); }); return t; }
  function body(n){
    var b=el('div','body');
    b.appendChild(el('h4','','plan')); b.appendChild(el('pre','',JSON.stringify(n.plan,null,2)));
    if(n.rationale){ b.appendChild(el('h4','','rationale')); b.appendChild(el('div','',n.rationale)); }
    var m={}; if(typeof n.score==='number') m['score (primary)']=n.score;
    (n.metrics||[]).forEach(function(p){ m[p[0]]=p[1]; });
    (n.train_metrics||[]).forEach(function(p){ m['train: '+p[0]]=p[1]; });
    m['compute seconds']=n.compute_seconds; m['tokens']=n.tokens;
    b.appendChild(el('h4','','metrics and cost')); b.appendChild(kv(m));
    if(n.adapter){ b.appendChild(el('div','','adapter: '+n.adapter)); }
    if(n.reused_from){ b.appendChild(el('div','','reused from '+n.reused_from.join(' / '))); }
    if((n.progress||[]).length){ b.appendChild(el('h4','',n.reused_from?'training log of the reused trial (step: loss)':'training log (step: loss)'));
      b.appendChild(el('pre','losses',n.progress.map(function(p){return p[0]+': '+fmt(p[1]);}).join('\n'))); }
    if(n.failure){ b.appendChild(el('h4','','failure')); b.appendChild(el('div','',n.failure+(n.failure_message?': '+n.failure_message:'')));
      if(n.log_tail) b.appendChild(el('pre','logtail',n.log_tail)); }
    b.appendChild(el('h4','','insights given'));
    if((n.insights||[]).length){ var ul=el('ul','insights'); n.insights.forEach(function(i){
      ul.appendChild(el('li','',i+(data.insights[i]?': '+data.insights[i]:' (retired)'))); }); b.appendChild(ul); }
    else b.appendChild(el('div','','none'));
    return b;
  }
  function render(parentKey, container){
    var kids=data.children[parentKey]||[]; if(!kids.length) return;
    var ul=el('ul', parentKey==='' ? 'tree top' : 'tree');
    kids.forEach(function(id){ var n=nodes[id]; var li=el('li','node'); li.setAttribute('data-node-id',id);
      li.setAttribute('data-status',n.status);
      var d=el('details','nd'); var s=el('summary');
      s.appendChild(el('span','badge s-'+n.status,n.status));
      s.appendChild(el('b','',id+' ')); if(id===data.best_node_id) s.appendChild(el('span','best','\u2605 best '));
      s.appendChild(el('span','op','['+n.operator+'] '));
      s.appendChild(el('span','score','score '+fmt(n.score)+' '));
      if(n.infeasible) s.appendChild(el('span','infeasible','infeasible: '+n.infeasible+' '));
      s.appendChild(el('span','plan',planSummary(n.plan)));
      var kidsN=(data.children[id]||[]).length; if(kidsN) s.appendChild(el('span','kids',' \u00b7 '+kidsN+' children'));
      var info=el('details','info'); info.appendChild(el('summary','','plan, metrics, logs, insights'));
      info.appendChild(body(n));
      d.appendChild(s); d.appendChild(info); render(id, d); li.appendChild(d); ul.appendChild(li); });
    container.appendChild(ul);
  }
  var root=document.getElementById('tree'); render('', root);
  document.getElementById('expand').onclick=function(){ document.querySelectorAll('details.nd').forEach(function(d){d.open=true;}); };
  document.getElementById('collapse').onclick=function(){ document.querySelectorAll('details').forEach(function(d){d.open=false;}); };
  // open the path to the best node, so the page starts on what matters
  var b=data.best_node_id; while(b){ var li=document.querySelector('li.node[data-node-id="'+b+'"]');
    if(li) li.firstChild.open=true; b=nodes[b] ? nodes[b].parent_id : null; }
  var bi=document.querySelector('li.node[data-node-id="'+data.best_node_id+'"] > details > details.info'); if(bi) bi.open=true;
  document.getElementById('rendered').textContent=String(document.querySelectorAll('li.node').length);
})();
"""


def to_html(tree: SearchTree) -> str:
    data = tree_to_dict(tree)
    payload = json.dumps(data, sort_keys=True, allow_nan=False, default=str) if _finite(data) else \
        json.dumps(json.loads(json.dumps(data), parse_constant=lambda c: None), sort_keys=True)
    payload = payload.replace("</", "<\\/")
    by_trials, by_compute = best_curves(tree)
    best = tree.best
    esc = html.escape
    counts = ", ".join(f"{k} {v}" for k, v in tree.count_by_status().items() if v)
    meta = (f"task {esc(tree.task)} · base {esc(tree.base_model or '-')} · policy {esc(tree.policy)} · "
            f"status {esc(tree.status)} · {len(tree.nodes)} nodes ({esc(counts)}) · trials {tree.trials} · "
            f"compute {tree.compute_seconds:.1f}s · tokens {tree.tokens} · best "
            f"{esc(best.node_id) if best else '-'} (val {_fmt_score(best.score if best else None)}, selection · "
            f"test {_fmt_score(tree.test_score)}, held out)")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>trex tree · {esc(tree.search_id)}</title>
<style>{_CSS}</style></head>
<body><header><h1>trex search {esc(tree.search_id)}</h1><div class="meta">{meta}</div>
<div class="meta">tree hash <code>{tree_hash(tree)}</code> · <span id="rendered">0</span> nodes rendered</div></header>
<main><section class="charts">
{svg_line_chart(by_trials, "best score vs trials", "trials started", "best score")}
{svg_line_chart(by_compute, "best score vs compute", "compute seconds", "best score")}
</section>
<div class="toolbar"><button id="expand">expand all</button><button id="collapse">collapse all</button></div>
<div id="tree"></div></main>
<script type="application/json" id="tree-data">{payload}</script>
<script>{_JS}</script></body></html>
"""


def _finite(x: Any) -> bool:
    try:
        json.dumps(x, allow_nan=False, default=str)
        return True
    except ValueError:
        return False
