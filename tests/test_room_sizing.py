"""A room's size, measured once by benchmarks/room.py (results/room.json), and every place that
repeats what it implies: INSTRUCTORS.md's table, run.py hub's --memory default, and the
Kubernetes files in deploy/. A cluster cannot run here, so these tests read the files only.
"""
import inspect
import json
import re
import textwrap
from pathlib import Path

import yaml

from benchmarks import room
from workshop import hub

REPO = Path(__file__).resolve().parent.parent
SAVED = json.loads((REPO / "results" / "room.json").read_text())
VALUES = yaml.safe_load((REPO / "deploy" / "values.yaml").read_text())
SIZING = room.sizing(SAVED)


def test_the_room_was_measured_with_2_4_and_8_attendees_and_none_failed():
    runs = [r for r in SAVED["runs"] if not r["hub_options"]]
    assert sorted(r["attendees"] for r in runs) == [2, 4, 8]
    for run in runs:
        assert run["failures"] == 0
        assert len(run["rows"]) == run["attendees"]
        assert all(row["end_s"] and row["first_result_s"] and row["peak_pss_gib"] > 0 for row in run["rows"])


def test_instructors_md_shows_the_measured_table():
    assert room.table(SAVED) in (REPO / "INSTRUCTORS.md").read_text()


def test_the_hubs_memory_limit_is_the_measured_one():
    assert hub.options([]).memory == f"{SIZING['memory_limit_gib']:g}G"


def test_the_kubernetes_values_hold_the_measured_figures():
    user = VALUES["singleuser"]
    assert user["memory"] == {"guarantee": f"{SIZING['memory_guarantee_gib']:g}G",
                              "limit": f"{SIZING['memory_limit_gib']:g}G"}
    assert user["cpu"] == {"guarantee": SIZING["cpu_guarantee"], "limit": SIZING["cpu_limit"]}
    assert user["extraEnv"]["OMP_NUM_THREADS"] == str(SIZING["cpu_limit"])


def test_the_kubernetes_values_keep_homes_data_and_culling_as_one_server_does():
    user = VALUES["singleuser"]
    assert user["notebookDir"] == f"/home/jovyan/{hub.FOLDER}"
    assert user["defaultUrl"] == f"/lab/tree/{hub.FIRST_LESSON}"
    assert user["lifecycleHooks"]["postStart"]["exec"]["command"][1:] == [
        "/opt/workshop/tools/make_attendee_copies.py", f"/home/jovyan/{hub.FOLDER}/attendee"]
    data = [m for m in user["storage"]["extraVolumeMounts"] if m["mountPath"] == user["extraEnv"]["CIFAR10_ROOT"]]
    assert data and data[0]["readOnly"] is True
    assert VALUES["cull"]["enabled"] and VALUES["cull"]["timeout"] == hub.options([]).cull_idle


def test_kubernetes_logs_in_with_the_rooms_own_authenticator():
    code = VALUES["hub"]["extraConfig"]["room-authenticator"]
    assert textwrap.dedent(inspect.getsource(hub.RoomAuthenticator)) in code
    assert f"NAME = re.compile({hub.NAME.pattern!r})" in code and repr(hub.NAME_RULE) in code
    compile(code, "room-authenticator", "exec")


def test_the_image_installs_the_pinned_workshop_and_jupyterhub():
    dockerfile = (REPO / "deploy" / "Dockerfile").read_text()
    pins = dict(re.findall(r"^(torch|torchvision)==(\S+)", (REPO / "requirements.txt").read_text(), re.M))
    assert f"torch=={pins['torch']} torchvision=={pins['torchvision']}" in dockerfile
    assert "-r requirements.txt -r requirements-hub.txt" in dockerfile
    assert "USER 1000" in dockerfile and 'CMD ["jupyterhub-singleuser"]' in dockerfile
    chart = re.search(r"chart version (\S+) ", (REPO / "deploy" / "values.yaml").read_text()).group(1)
    assert f"--version {chart}" in (REPO / "deploy" / "values.yaml").read_text()
    assert f"chart {chart}" in (REPO / "README.md").read_text()
