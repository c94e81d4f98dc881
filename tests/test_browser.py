"""The UIs, in a real browser: the MLflow UI and optuna-dashboard, started with the project's own commands
(`synthboost ui`, `synthboost dashboard`) on a test store that holds a smoke grid and a small study, and looked at
with Debian's Chromium driven by Selenium — as a person would: runs table with tags, nested trials, the compare
view, the study page.  Every test saves a screenshot under tests/artifacts/ (git-ignored).

Nothing is downloaded: Selenium gets Debian's chromedriver and chromium explicitly, so Selenium Manager never
runs.  The servers are stopped (their whole process group) when the module is done.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import unavailable
from smoke_configs import smoke_grid, smoke_study

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
ARTIFACTS = Path(__file__).parent / "artifacts"
TIMEOUT = 90  # seconds for any one thing to appear; the CPU is slow and shared

_missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
try:
    import selenium  # noqa: F401
except ImportError:
    _missing.append("the selenium package (pip install -e '.[dev]')")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", autouse=True)
def _browser_installed():
    # a failure without a browser: `make test` installs it first (tools/system-deps)
    if _missing:
        unavailable(f"browser tests need {', '.join(_missing)} (apt-get install chromium chromium-driver)")

GRID = smoke_grid(experiment="ui-grid", mixes="[{ratio: 1.0, strategy: balance}]", fixed="clf.epochs: 1")
STUDY = smoke_study(n_trials=3)
STUDY_NAME = "ui-study"


# ---------------------------------------------------------------- the store: a smoke grid and a small study
@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A fresh SQLite store + Optuna journal with a 4-cell smoke grid (none and vae, seeds 0 and 1) and a 3-trial
    vae study (its trials reuse the grid's seed-0 generator), and what the tests look for in the UIs."""
    from synthboost import grid as grid_mod
    from synthboost import queue
    from synthboost import study as study_mod
    from synthboost.tracking import Tracker

    folder = tmp_path_factory.mktemp("ui")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    journal = str(folder / "optuna.journal")
    (folder / "grid.yaml").write_text(GRID)
    (folder / "study.yaml").write_text(STUDY)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        grid = grid_mod.run_grid(grid_mod.load_grid(folder / "grid.yaml"), storage_url=journal, show_progress=False)
        spec = study_mod.load_spec(model="vae", path=folder / "study.yaml")
        study = study_mod.run_study(spec, name=STUDY_NAME, storage_url=journal, experiment="ui-study")
    assert grid.done == 4 and study["trials"]["COMPLETE"] == 3
    tracker = Tracker(uri)
    client = tracker.client
    grid_exp = client.get_experiment_by_name("ui-grid").experiment_id
    study_exp = client.get_experiment_by_name("ui-study").experiment_id
    cells = client.search_runs([grid_exp], f"tags.`mlflow.parentRunId` = '{grid.parent_run_id}'")
    trials = client.search_runs([study_exp], f"tags.`mlflow.parentRunId` = '{study['parent_run_id']}'")
    assert len(cells) == 4 and len(trials) == 3
    trained_here = {r.info.run_id for r in cells if r.data.tags.get("generator_trained") == "true"}
    assert all(t.data.tags["generator_run_id"] in trained_here for t in trials)  # the cache across grid and study
    return SimpleNamespace(folder=folder, uri=uri, journal=journal, tracker=tracker, grid_exp=grid_exp,
                           study_exp=study_exp, grid_parent=grid.parent_run_id, cells=cells,
                           study_parent=study["parent_run_id"], trials=trials, objective=spec.objective,
                           study_id=queue.open_storage(journal).get_study_id_from_name(STUDY_NAME))


# ---------------------------------------------------------------- servers, started and stopped here
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(cmd: list[str], *, env: dict[str, str], ready_url: str, log: Path) -> subprocess.Popen:
    """Start ``cmd`` in its own process group (so that stopping it stops its workers too) and wait until
    ``ready_url`` answers."""
    out = log.open("w")
    proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True)
    out.close()
    deadline = time.monotonic() + TIMEOUT
    while True:
        if proc.poll() is not None:
            pytest.fail(f"{cmd[2:4]} exited with {proc.returncode} before answering:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(ready_url, timeout=5) as resp:
                if resp.status == 200:
                    return proc
        except OSError:
            pass
        if time.monotonic() > deadline:
            _stop(proc)
            pytest.fail(f"{ready_url} did not answer within {TIMEOUT} s:\n{log.read_text()[-3000:]}")
        time.sleep(0.5)


def _group_alive(pgid: int) -> list[int]:
    """Live (not zombie) processes of the process group ``pgid``."""
    alive = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # it ended while we looked
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            alive.append(int(stat.parent.name))
    return alive


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM the process group this module started (``start_new_session``: it and only it), SIGKILL what is
    left after 30 s, and check that nothing of it is still running."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            proc.poll()  # reap the leader
            if not _group_alive(proc.pid):
                break
            time.sleep(0.2)
        if not _group_alive(proc.pid):
            break
    proc.wait(timeout=10)
    assert not _group_alive(proc.pid), f"left running: {_group_alive(proc.pid)}"


@pytest.fixture(scope="module")
def mlflow_ui(store):
    """`synthboost ui` on the test store; yields its base URL."""
    port = _free_port()
    env = os.environ | {"MLFLOW_TRACKING_URI": store.uri}
    proc = _start([sys.executable, "-m", "synthboost", "ui", "--port", str(port)], env=env,
                  ready_url=f"http://127.0.0.1:{port}/health", log=store.folder / "mlflow-ui.log")
    yield f"http://127.0.0.1:{port}"
    _stop(proc)


@pytest.fixture(scope="module")
def dashboard(store):
    """`synthboost dashboard --name ui-study` on the test journal; yields the study page's URL it printed."""
    port = _free_port()
    log = store.folder / "dashboard.log"
    proc = _start([sys.executable, "-m", "synthboost", "dashboard", "--name", STUDY_NAME, "--storage",
                   store.journal, "--port", str(port)], env=dict(os.environ),
                  ready_url=f"http://127.0.0.1:{port}/api/studies", log=log)
    printed = re.search(r"at (http://\S+/dashboard/studies/\d+)", log.read_text())
    assert printed, log.read_text()
    yield printed.group(1)
    _stop(proc)


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1800,950"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(TIMEOUT)
    yield driver
    driver.quit()


def wait(driver, condition, message: str = ""):
    """WebDriverWait for ``condition``; on a timeout the page is saved as tests/artifacts/FAILED-….png."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, TIMEOUT, poll_frequency=0.5).until(condition, message)
    except TimeoutException:
        screenshot(driver, "FAILED-" + re.sub(r"[^\w.-]+", "_", message)[:80] + ".png")
        raise


def screenshot(driver, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    assert driver.save_screenshot(str(path)), path
    return path


# ---------------------------------------------------------------- MLflow UI helpers
def css(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def open_runs_table(driver, base: str, experiment_id: str, parent_run_id: str, *, expand: bool = True):
    """The experiment's runs table (the "Model training" view), the assistant panel closed, the parent run's
    nested runs expanded (or, with ``expand=False``, the parent's expander returned)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC

    driver.get(f"{base}/#/experiments/{experiment_id}/runs?workflowType=machine_learning")
    expander = (By.CSS_SELECTOR, f'div[role="row"][row-id="{parent_run_id}"] '
                                 'button[data-component-id*="runnamecellrenderer"]')
    wait(driver, EC.element_to_be_clickable(expander), "the parent run's row with its expander")
    close_assistant(driver)
    widen(driver, "attributes.`Run Name`", 160)  # run names say what a run is: show them whole
    if not expand:
        return driver.find_element(*expander)
    driver.find_element(*expander).click()


def widen(driver, col_id: str, pixels: int) -> None:
    """Drag a column header's resize handle, as a person widening a column would."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    handles = driver.find_elements(By.CSS_SELECTOR, f'.ag-header-cell[col-id="{css(col_id)}"] .ag-header-cell-resize')
    if handles:
        ActionChains(driver).click_and_hold(handles[0]).move_by_offset(pixels, 0).release().perform()


def close_assistant(driver) -> None:
    """Close the MLflow Assistant side panel: it opens by default and hides a third of the page."""
    from selenium.webdriver.common.by import By

    for close in driver.find_elements(By.CSS_SELECTOR, '[data-component-id="mlflow.assistant.chat_panel.close"]'):
        if close.is_displayed():
            close.click()


def pick_columns(driver, want: dict[str, set[str]], drop: dict[str, set[str]] | None = None) -> None:
    """Tick columns under "Columns" by section (Attributes, Metrics, Parameters, Tags) and untick ``drop``."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as EC

    driver.find_element(By.XPATH, "//button[.//*[text()='Columns']]").click()
    dialog = wait(driver, EC.visibility_of_element_located(
        (By.CSS_SELECTOR, '[data-component-id="mlflow.experiment_page.runs_table.column_selector"]')),
        "the column selector")
    section, toggled = None, set()
    for node in dialog.find_elements(By.CSS_SELECTOR, ".du-bois-light-tree-treenode"):
        title = node.text.strip()
        head = title.split(" (")[0]
        if head in ("Attributes", "Metrics", "Parameters", "Tags"):
            section = head
            continue
        if title in want.get(section, set()) | (drop or {}).get(section, set()):
            node.find_element(By.CSS_SELECTOR, ".du-bois-light-tree-checkbox").click()
            toggled.add((section, title))
    expected = {(s, t) for s, ts in want.items() for t in ts}
    assert expected <= toggled, f"not offered under Columns: {sorted(expected - toggled)}"
    driver.find_element(By.TAG_NAME, "body").send_keys(Keys.ESCAPE)
    wait(driver, EC.invisibility_of_element(dialog), "the column selector to close")


def cell_text(driver, run_id: str, col_id: str) -> str | None:
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    try:
        cells = driver.find_elements(By.CSS_SELECTOR, f'div[role="row"][row-id="{run_id}"] '
                                                      f'div[role="gridcell"][col-id="{css(col_id)}"]')
        return cells[0].text.strip() if cells else None
    except StaleElementReferenceException:  # the grid re-rendered under us; the wait asks again
        return None


# ---------------------------------------------------------------- the tests
def test_mlflow_runs_table_shows_the_grid_runs_with_their_tags_dataset_and_model(browser, mlflow_ui, store):
    open_runs_table(browser, mlflow_ui, store.grid_exp, store.grid_parent)
    pick_columns(browser, {"Metrics": {"test/accuracy"}, "Tags": {"model", "regime", "size"}},
                 drop={"Attributes": {"Source"}})
    for run in store.cells:
        rid, tags = run.info.run_id, run.data.tags
        for key in ("model", "regime", "size"):
            wait(browser, lambda d: cell_text(d, rid, f"tags.`{key}`") == tags[key],
                 f"tag {key}={tags[key]} in the row of {run.info.run_name}")
        assert run.info.run_name in cell_text(browser, rid, "attributes.`Run Name`")
        # MLflow-native records fill the UI's own columns: the split as a dataset, the generator as a model
        dataset = run.inputs.dataset_inputs[0].dataset
        assert cell_text(browser, rid, "attributes.`Dataset`").startswith(f"{dataset.name} ({dataset.digest[:20]}")
        assert tags["data_digest"].startswith(dataset.digest)
        models = cell_text(browser, rid, "attributes.`Models`")
        assert models == ("vae-generator" if tags["model"] == "vae" else "-"), models
        accuracy = cell_text(browser, rid, "metrics.`test/accuracy`")
        assert float(accuracy) == pytest.approx(run.data.metrics["test/accuracy"], abs=1e-3)
    screenshot(browser, "mlflow-runs-table.png")


def test_mlflow_study_parent_run_shows_its_nested_trials(browser, mlflow_ui, store):
    from selenium.webdriver.common.by import By

    expander = open_runs_table(browser, mlflow_ui, store.study_exp, store.study_parent, expand=False)
    rows = lambda d: {r.get_attribute("row-id") for r in d.find_elements(By.CSS_SELECTOR, 'div[role="row"][row-id]')}
    trial_ids = {r.info.run_id for r in store.trials}
    assert store.study_parent in rows(browser) and not trial_ids & rows(browser)  # folded under the parent
    expander.click()
    for run in store.trials:
        rid = run.info.run_id
        wait(browser, lambda d: run.info.run_name in (cell_text(d, rid, "attributes.`Run Name`") or ""),
             f"nested trial {run.data.tags['optuna.trial_number']} under the study's parent run")
    screenshot(browser, "mlflow-study-nested-trials.png")


def test_mlflow_compare_view_shows_both_runs_metrics(browser, mlflow_ui, store):
    from selenium.webdriver.common.by import By

    by_name = {r.data.tags["model"] + r.data.tags["seed"]: r for r in store.cells}
    runs = [by_name["vae0"], by_name["none0"]]
    ids = [r.info.run_id for r in runs]
    browser.get(f"{mlflow_ui}/#/compare-runs?runs={urllib.parse.quote(json.dumps(ids))}"
                f"&experiments={urllib.parse.quote(json.dumps([store.grid_exp]))}")
    wait(browser, lambda d: "Comparing 2 Runs" in d.find_element(By.TAG_NAME, "body").text, "the compare page")
    close_assistant(browser)
    for metric in ("test/accuracy", "test/balanced_accuracy", "test/macro_f1"):  # rows the grid renders first
        def values(d, metric=metric):
            # the metric table is two virtualised grids side by side: names left, one value cell per run right,
            # rows aligned by their offset
            links = d.find_elements(By.XPATH, f"//a[@title='Plot chart'][text()='{metric}']")
            if not links:
                return None
            top = links[0].find_element(By.XPATH, "..").value_of_css_property("top")
            inner = "ReactVirtualized__Grid__innerScrollContainer"
            table = links[0].find_elements(By.XPATH, f"./ancestor::div[count(.//div[contains(@class, '{inner}')]) >= 2][1]")
            grids = table[0].find_elements(By.CLASS_NAME, inner) if table else []
            cells = grids[-1].find_elements(By.XPATH, f"./div[contains(@style, 'top: {top}')]") if grids else []
            texts = [c.get_attribute("textContent").strip() for c in cells]
            return texts if len(texts) == len(runs) and all(texts) else None

        shown = wait(browser, values, f"{metric} for both runs")
        for run, text in zip(runs, shown):
            assert float(text) == pytest.approx(run.data.metrics[metric], abs=1e-3), (metric, shown)
    heading = browser.find_element(By.XPATH, "//*[normalize-space(text())='Metrics']")
    browser.execute_script("arguments[0].scrollIntoView({block: 'start'})", heading)
    screenshot(browser, "mlflow-compare.png")


def test_optuna_dashboard_study_page_names_the_objective_and_plots_the_history(browser, dashboard, store):
    from selenium.webdriver.common.by import By

    assert dashboard.endswith(f"/dashboard/studies/{store.study_id}")
    browser.get(dashboard)
    points = (By.CSS_SELECTOR, "#plot-history path.point")
    wait(browser, lambda d: len(d.find_elements(*points)) == len(store.trials),
         "one point per trial in the optimization history plot")
    axis = [t.text for t in browser.find_elements(By.CSS_SELECTOR, "#plot-history text.ytitle")]
    assert axis == [store.objective], axis  # study.set_metric_names: not "Objective 0"
    page = browser.find_element(By.TAG_NAME, "body").text
    assert STUDY_NAME in page and "Objective 0" not in page
    screenshot(browser, "optuna-dashboard-study.png")

    browser.get(f"{dashboard}/trials")
    wait(browser, lambda d: f"{len(store.trials)} Trials" in d.find_element(By.TAG_NAME, "body").text,
         "the trial list")
    page = browser.find_element(By.TAG_NAME, "body").text
    assert all(f"Trial {n}" in page for n in range(len(store.trials)))
    assert "mlflow_run_id" in page  # each trial names its MLflow run
    screenshot(browser, "optuna-dashboard-trials.png")
