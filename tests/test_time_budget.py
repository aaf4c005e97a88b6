"""train.time_budget: the loop measures its own costs, plans steps and dev checks to fit, and ends inside the budget."""
from __future__ import annotations

import json
import time

import pytest
import torch
from safetensors.torch import load_file

from crosstune.data.types import DataError
from crosstune.train.config import run_dir
from crosstune.train.config.checks import format_duration, parse_duration
from crosstune.train.recipes.export import export_command
from crosstune.train.recipes.train import train
from crosstune.train.training.plan import MAX_EVENTS, fit


def test_durations_as_people_write_them_and_a_bare_number_refused(tiny_cfg):
    assert [parse_duration(v) for v in ("20m", "90s", "1h30m", "1.5h", "", "2m30s")] == [1200, 90, 5400, 5400, 0, 150]
    assert [format_duration(s) for s in (90, 1800, 45, 5400)] == ["1m30s", "30m", "45s", "1h30m"]
    with pytest.raises(DataError, match=r"train.time_budget=1800; set train.time_budget to a duration"):
        tiny_cfg("train.time_budget=1800")


@pytest.mark.parametrize("left,step,event,cap", [(600, 2.0, 30, 0), (600, 2.0, 300, 0), (60, 0.01, 0.5, 0),
                                                 (60, 0.01, 0.5, 40), (100, 9.0, 5, 0)])
def test_the_plan_fits_the_time_left_with_a_few_checks(left, step, event, cap):
    steps, every, events = fit(left, step, event, cap)
    assert steps >= 1 and 1 <= events <= MAX_EVENTS
    assert steps * step + events * event <= left  # steps and checks fit in what is left
    assert events == -(-steps // every)  # a check every `every` steps, the last at the final step
    assert not cap or steps <= cap
    if not cap:  # nothing wasted: what is left over is less than one more step and one more check
        assert left - (steps * step + events * event) < step + event


def test_a_budget_too_short_for_one_step_is_one_line_with_the_costs(tiny_cfg, mined_tiny):
    cfg = tiny_cfg(f"train.dataset={mined_tiny / 'dataset'}", "train.time_budget=1s", "train.max_steps=0")
    with pytest.raises(DataError, match=r"train.time_budget=1s is too short here: .* a step costs .* give at least"):
        train(cfg)


def test_a_budgeted_run_plans_trains_and_ends_inside_its_budget(tiny_cfg, mined_tiny, capsys):
    budget = 20
    cfg = tiny_cfg(f"train.dataset={mined_tiny / 'dataset'}", f"train.time_budget={budget}s", "train.max_steps=0")
    t0 = time.time()
    summary = train(cfg)
    wall = time.time() - t0
    out = run_dir(cfg)
    plan = json.loads((out / "plan.json").read_text())
    assert plan["budget_s"] == budget and plan["ended_by"] in ("plan", "deadline")
    assert plan["ran_steps"] == summary["steps"] and plan["steps"] == summary["planned_steps"]
    assert wall <= budget  # the run ends inside the budget, the export's reserve left over
    assert wall + plan["reserve_s"] >= 0.5 * budget  # and uses it: the steps fill what the checks leave
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    dev_steps = [r["step"] for r in logged if "dev/nDCG@10" in r]
    assert dev_steps == list(range(plan["eval_every"], summary["steps"], plan["eval_every"])) + [summary["steps"]]
    assert len(dev_steps) <= plan["checks"] <= 4
    printed = capsys.readouterr().out
    assert f"plan for train.time_budget 20s: ~{plan['steps']} steps" in printed and "done by" in printed
    card = (export_command(cfg) / "README.md").read_text()
    assert "Time budget: 20s (`train.time_budget`)" in card and f"planned {plan['steps']} steps" in card
    assert f"ran {summary['steps']} steps" in card


def test_the_probe_leaves_no_trace_and_a_resumed_run_keeps_its_plan(tiny_cfg, mined_tiny, capsys):
    # capped by max_steps: the plan sets 4 steps and a check (with a checkpoint) after each; with dropout on, the
    # budgeted run must train exactly as a plain run of the same schedule: the probe restored the random state
    common = [f"train.dataset={mined_tiny / 'dataset'}", "train.max_steps=4", "train.dropout=0.1"]
    budgeted = tiny_cfg(*common, "train.time_budget=5m", "run.name=budgeted")
    train(budgeted)
    plan = json.loads((run_dir(budgeted) / "plan.json").read_text())
    assert (plan["steps"], plan["capped_by"], plan["eval_every"]) == (4, "train.max_steps", 1)
    plain = tiny_cfg(*common, "train.eval_every=1", "train.save_every=1", "run.name=plain")
    train(plain)
    a = load_file(str(run_dir(budgeted) / "step_000004" / "model" / "model.safetensors"))
    b = load_file(str(run_dir(plain) / "step_000004" / "model" / "model.safetensors"))
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=0, rtol=0, msg=k)
    # resumed under another budget, the run keeps the plan it made: its steps, its schedule, its budget
    capsys.readouterr()
    again = tiny_cfg(*common, "train.time_budget=1h", "run.name=budgeted")
    assert train(again, resume=str(run_dir(budgeted) / "step_000003"))["steps"] == 4
    assert "(the plan this run made when it started)" in capsys.readouterr().out
    assert json.loads((run_dir(budgeted) / "plan.json").read_text())["budget_s"] == 300
