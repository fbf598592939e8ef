"""The html view, opened in headless Chromium: the nodes are in the DOM after its script ran."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.plugins.search_fixtures import evaluated, failed
from trex.events.insights import InsightDistilled
from trex.events.plans import PlanProposed
from trex.events.search import SearchStarted
from trex.events.trials import TrialProgressed, TrialStarted
from trex.search import build_tree
from trex.search.render import to_html

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs chromium (apt-get install -y chromium)")


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}", *args],
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def page(log, tmp_path):
    log.append("html", [
        SearchStarted(task="arith-sub", base_model="tiny-gpt2"),
        InsightDistilled(insight_id="ins-lr", text="a learning rate near 1e-4 works"),
        *evaluated("draft-a", None, 0.41), *evaluated("draft-b", None, 0.55),
        PlanProposed(node_id="imp-1", parent_id="draft-b", operator="improve", plan={"lr": 2e-4, "epochs": 2},
                     rationale="double the lr", insights=("ins-lr",)),
        TrialStarted(node_id="imp-1", trial_id="t1"),
        TrialProgressed(node_id="imp-1", trial_id="t1", step=10, loss=2.5),
        TrialProgressed(node_id="imp-1", trial_id="t1", step=20, loss=1.25),
        *evaluated("imp-2", "draft-b", 0.72),
        *failed("imp-3", "imp-2"),
        *evaluated("dbg-1", "imp-3", 0.61, operator="debug"),
    ])
    tree = build_tree(log, "html")
    path = tmp_path / "tree.html"
    path.write_text(to_html(tree), encoding="utf-8")
    return tree, path


def test_html_renders_every_node_in_chromium(page, tmp_path):
    tree, path = page
    text = path.read_text()
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", text), "the page must not load anything"
    dom = chromium(tmp_path, "--dump-dom", path.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    rendered = set(re.findall(r'<li class="node" data-node-id="([^"]+)"', html))
    assert rendered == set(tree.nodes)  # these elements exist only if the script ran
    assert re.search(rf'id="rendered">{len(tree.nodes)}<', html)
    assert 'data-status="failed"' in html and '<pre class="logtail">loss=nan</pre>' in html  # failure log tail
    assert "ins-lr: a learning rate near 1e-4 works" in html  # the insight given to imp-1
    assert "10: 2.5\n20: 1.25" in html  # imp-1's training log
    assert html.count("<svg") >= 2 and "best score vs trials" in html and "best score vs compute" in html
    # the best node's path is open, its details shown
    assert re.search(r'data-node-id="imp-2" data-status="evaluated"><details class="nd" open=""', html)

    shot = tmp_path / "tree.png"
    res = chromium(tmp_path, f"--screenshot={shot}", "--window-size=1280,900", path.as_uri())
    assert res.returncode == 0 and shot.exists() and shot.stat().st_size > 10_000, res.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / ".gitignore").write_text("*\n")
    shutil.copy(shot, ARTIFACTS / "search_tree.png")
    shutil.copy(path, ARTIFACTS / "search_tree.html")
