"""What a user sees of the pack in the real frontend: the node library, the templates, the
blueprint, the growing people list and the help pages."""

from __future__ import annotations

import json

import pytest
from expected import ROOT

PACK_NODES = {
    k: v["display_name"]
    for k, v in json.loads(
        (ROOT / "tests" / "fixtures" / "comfyui" / "object_info_pack.json").read_text()
    ).items()
}
TEMPLATES = sorted(p.stem for p in (ROOT / "workflows").glob("*.json"))
BLUEPRINT = "Face-diffuser person"


def _library_folder(browser, folder: str) -> str:
    """The text under ``folder`` of the node library sidebar, as shown (whitespace closed)."""
    page = browser.page
    item = page.get_by_text(folder, exact=True).first
    if not item.is_visible():
        browser.js(
            "() => window.app.extensionManager.command"
            ".execute('Workspace.ToggleSidebarTab.node-library')"
        )
    item.wait_for(timeout=90_000)
    item.click()
    page.wait_for_timeout(800)
    texts = page.locator("[role=tree]").evaluate_all("els => els.map(e => e.textContent)")
    return " ".join(" ".join(texts).split())


def test_the_node_library_lists_the_pack_and_its_blueprint(fresh):
    if not fresh.js("() => !!window.app.extensionManager?.command"):
        pytest.skip("this frontend has no command API for the sidebar")
    shown = _library_folder(fresh, "Face-diffuser")
    for display_name in PACK_NODES.values():
        assert display_name in shown, (display_name, shown[:3000])
    registered = fresh.js(
        "() => Object.entries(window.LiteGraph.registered_node_types)"
        ".filter(([k]) => k.startsWith('FaceDiffuser')).map(([k, v]) => [k, v.category])"
    )
    assert sorted(k for k, _ in registered) == sorted(PACK_NODES)
    assert {c for _, c in registered} == {"Face-diffuser"}
    if tuple(int(x) for x in fresh.version.split(".")[:3]) < (0, 3, 67):
        pytest.skip("no subgraph blueprints before ComfyUI 0.3.67")
    assert BLUEPRINT in _library_folder(fresh, "Subgraph Blueprints")


def test_the_template_browser_shows_each_template_with_its_thumbnail(fresh):
    fresh.js("() => window.app.extensionManager.command.execute('Comfy.BrowseTemplates')")
    page = fresh.page
    page.wait_for_timeout(1500)
    category = page.get_by_text("facediffuser", exact=True).first
    category.wait_for(timeout=90_000)
    category.click()
    page.wait_for_timeout(2500)
    text = page.locator("[role=dialog]").first.inner_text()
    for name in TEMPLATES:
        assert name in text, (name, text[:2000])
    thumbs = {u.split("/")[-1] for u in fresh.requests if "/workflow_templates/facediffuser/" in u}
    assert {f"{n}.jpg" for n in TEMPLATES} <= thumbs, thumbs
    fresh.close_dialogs()


def _people_sockets(browser, node_id: int) -> list[list]:
    return browser.js(
        "(id) => window.app.graph.getNodeById(id).inputs"
        ".filter(i => i.name.includes('person_'))"
        ".map(i => [i.name, i.label ?? null, i.link ?? null])",
        node_id,
    )


def test_the_people_list_grows_and_shrinks_as_people_are_connected(fresh):
    if not fresh.js(
        "() => !!window.LiteGraph.registered_node_types['FaceDiffuserSubjectEncode']"
        ".nodeData?.input?.required?.people"
    ):
        pytest.skip("this ComfyUI has fixed person_1..person_4 sockets (no growing list)")
    fresh.js("() => window.app.graph.clear()")
    ids = fresh.js(
        """() => {
          const g = window.app.graph, made = [];
          const kinds = [['FaceDiffuserSubjectEncode', 500], ['LoadImage', 50], ['LoadImage', 50]];
          for (const [type, x] of kinds) {
            const n = window.LiteGraph.createNode(type);
            n.pos = [x, 100 + 350 * made.length]; g.add(n); made.push(n.id);
          }
          return made;
        }"""
    )
    encode, first, second = ids
    assert _people_sockets(fresh, encode) == [["people.person_1", "person_1", None]]
    connect = (
        "([from, to, name]) => { const g = window.app.graph; const t = g.getNodeById(to);"
        " g.getNodeById(from).connect(0, t, t.inputs.findIndex(i => i.name === name)); }"
    )
    fresh.js(connect, [first, encode, "people.person_1"])
    fresh.page.wait_for_timeout(300)
    grown = _people_sockets(fresh, encode)
    assert [s[:2] for s in grown] == [
        ["people.person_1", "person_1"],
        ["people.person_2", "person_2"],
    ]
    fresh.js(connect, [second, encode, "people.person_2"])
    fresh.page.wait_for_timeout(300)
    assert [s[0] for s in _people_sockets(fresh, encode)] == [
        f"people.person_{i}" for i in (1, 2, 3)
    ]
    fresh.js(
        "(to) => { const t = window.app.graph.getNodeById(to);"
        " t.disconnectInput(t.inputs.findIndex(i => i.name === 'people.person_2')); }",
        encode,
    )
    fresh.page.wait_for_timeout(300)
    shrunk = _people_sockets(fresh, encode)
    assert [s[0] for s in shrunk] == ["people.person_1", "people.person_2"], shrunk
    assert shrunk[0][2] is not None and shrunk[1][2] is None


@pytest.mark.parametrize("node_id", ["FaceDiffuserSubjectEncode", "FaceDiffuserSNFSettings"])
def test_a_help_page_opens_from_the_selected_node_without_a_404(fresh, node_id):
    page = fresh.page
    fresh.js("() => window.app.graph.clear()")
    fresh.js(
        "(t) => { const n = window.LiteGraph.createNode(t); n.pos = [400, 300];"
        " window.app.graph.add(n); window.app.canvas.selectNode(n);"
        " window.app.canvas.setDirty(true, true); }",
        node_id,
    )
    button = page.locator("[data-testid=info-button]").first
    try:
        button.wait_for(timeout=5000)
    except Exception:
        pytest.skip("this frontend has no node info button in the selection toolbox")
    button.click()  # the side panel's Info tab (fetched once; kept while the page lives)
    # the page's first sentence is shown
    body = (ROOT / "web" / "docs" / node_id / "en.md").read_text().split("\n\n")[1]
    page.get_by_text(" ".join(body.split()[:4]), exact=False).first.wait_for(timeout=90_000)
    asked = [u for u in fresh.requests if "/docs/" in u and node_id in u]
    assert asked and all(u.endswith(f"/docs/{node_id}/en.md") for u in asked), asked
    missing = [f for f in fresh.failed_requests if "/extensions/facediffuser/" in f]
    assert not missing, missing
