"""Every shipped workflow and every saved graph of every released version, loaded in the real
frontend: node types, widget values and links exactly as saved, and no stray socket."""

from __future__ import annotations

import json

import pytest
from expected import PEOPLE, TEMPERATURE_PROPERTY, cases, meaning

CASES = cases()


def _host_has_people_list(browser) -> bool:
    return browser.js(
        "() => !!window.LiteGraph.registered_node_types['FaceDiffuserSubjectEncode']"
        ".nodeData?.input?.required?.people"
    )


@pytest.mark.parametrize("case,path,api", CASES, ids=[c[0] for c in CASES])
def test_loads_with_every_value_and_link_as_saved(fresh, case, path, api):
    saved = json.loads(path.read_text())
    fresh.load(saved, path.stem)
    state = fresh.state()
    # node types: exactly the saved ones
    assert {k: v["type"] for k, v in state["nodes"].items()} == {
        str(n["id"]): n["type"] for n in saved["nodes"]
    }
    # widget values and links, as the frontend would queue them, mean what the API twin says
    expected, kept = meaning(api)
    got, _ = meaning(fresh.prompt())
    assert got == expected
    for node_id, temperature in kept.items():  # hard mode: the temperature is kept
        widgets = state["nodes"][node_id]["widgets"]
        shown = widgets.get(
            "temperature", state["nodes"][node_id]["properties"].get(TEMPERATURE_PROPERTY)
        )
        assert shown == pytest.approx(temperature), (node_id, state["nodes"][node_id])
    # the people: one socket per person, no duplicate, no unremovable leftover
    people_list = _host_has_people_list(fresh)
    for node in state["nodes"].values():
        if node["type"] not in PEOPLE:
            continue
        sockets = [i for i in node["inputs"] if "person_" in i["name"]]
        names = [i["name"] for i in sockets]
        assert len(names) == len(set(names)), names
        if people_list:
            connected = [i for i in sockets if i["link"] is not None]
            assert all(n.startswith("people.person_") for n in names), names
            assert [i["label"] for i in sockets] == [n.split(".")[1] for n in names], sockets
            # the connected people, then one empty socket for the next (none after four)
            assert len(sockets) == min(len(connected) + 1, 4), sockets
            assert sockets[-1]["link"] is None or len(connected) == 4
        else:
            assert sorted(names) == [f"person_{i}" for i in range(1, 5)], names


def test_shipped_workflows_label_every_person_socket_alike():
    """The shipped graphs name people.person_N and label them person_N, as the list does."""
    from expected import WORKFLOWS

    for path in [*WORKFLOWS.glob("*.json"), *WORKFLOWS.glob("quick/*.json")]:
        for node in json.loads(path.read_text())["nodes"]:
            for slot in node.get("inputs", []):
                if slot["name"].startswith("people."):
                    assert slot.get("label") == slot["name"].split(".", 1)[1], (path.name, slot)
