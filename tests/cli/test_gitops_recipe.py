"""docs/gitops.md's CI recipes, extracted from the page and run against a real `fibric serve`.

Every block marked `<!-- recipe: NAME -->` is read from the page: the
shell block that makes the CI keys, the GitHub Actions workflows (each
`run:` step, with its `env:` and `${{ }}` expressions resolved as Actions
would) and the GitLab CI file (each job's script, with its variables). They
run in bash with -e and pipefail, as the runners do, in a checkout of a
small specs repo, against a server on loopback. `uses:` steps and the
install line are not run (the CLI under test is already installed); `gh` is
a recorder on PATH, since no GitHub is reachable from here.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cli_support import KEY, run, write_repo
from ruamel.yaml import YAML
from served_process import RUNNING, Served

import fibric

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "gitops.md"
BLOCK = re.compile(r"<!-- recipe: ([\w-]+) -->\n```(\w+)\n(.*?)\n```", re.S)
EXPRESSION = re.compile(r"\$\{\{\s*([\w.]+)\s*\}\}")
INSTALL = re.compile(r'^pip install "fibric==([^"]+)"$')
KNOWN_ACTIONS = ("actions/checkout@", "actions/setup-python@")
PR_NUMBER = "7"
STEP_TIMEOUT = 120


def recipes() -> dict[str, str]:
    found = {name: body for name, _, body in BLOCK.findall(GUIDE.read_text(encoding="utf-8"))}
    assert set(found) == {"keys", "github-pull-request", "github-main", "gitlab"}, sorted(found)
    return found


def parsed(name: str) -> dict[str, Any]:
    document = YAML(typ="safe").load(recipes()[name])
    assert isinstance(document, dict), name
    return document


@dataclass
class Ci:
    """A checkout of the specs repo, a running server, and what a CI runner would give each step."""

    checkout: Path
    url: str
    keys: dict[str, str]
    tmp: Path

    def shell(self, script: str, env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
        """`script` as a runner runs it: bash -e -o pipefail, in the checkout, only `env` set (and PATH)."""
        base = {k: v for k, v in os.environ.items() if not k.startswith(("FIBRIC_", "GH_", "GITHUB_"))}
        path = os.pathsep.join([str(self.tmp / "bin"), str(Path(sys.executable).parent),
                                base.get("PATH", "")])
        return subprocess.run(["bash", "--noprofile", "--norc", "-e", "-o", "pipefail", "-c", script],
                              cwd=self.checkout, env={**base, **env, "PATH": path}, capture_output=True,
                              text=True, timeout=STEP_TIMEOUT)


@pytest.fixture
def ci(tmp_path: Path) -> Iterator[Ci]:
    """A served data dir, the keys made by the guide's own commands, and a `gh` that records its call."""
    checkout = write_repo(tmp_path / "repo").parent
    data_dir = tmp_path / "data"
    served = Served(["--data-dir", str(data_dir)], cwd=tmp_path)
    try:
        running = served.wait_for(RUNNING)
        assert running is not None, served.text
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        gh = bin_dir / "gh"
        gh.write_text('#!/bin/sh\n'
                      '{ printf "GH_TOKEN=%s\\n" "$GH_TOKEN"; printf "%s\\n" "$@"; } > "$GH_CALLS"\n')
        gh.chmod(0o755)
        ci = Ci(checkout, running.group(1), {}, tmp_path)
        made = ci.shell(recipes()["keys"] + '\nprintf "%s\\n" "$FIBRIC_PR_KEY" "$FIBRIC_APPLY_KEY"\n',
                        {"FIBRIC_DATA_DIR": str(data_dir)})
        assert made.returncode == 0, made.stderr
        pr_key, apply_key = made.stdout.split()
        assert KEY.fullmatch(pr_key) and KEY.fullmatch(apply_key), made.stdout
        ci.keys = {"FIBRIC_PR_KEY": pr_key, "FIBRIC_APPLY_KEY": apply_key}
        yield ci
    finally:
        served.kill()


# --- GitHub Actions ------------------------------------------------------------------------------


def github_steps(workflow: dict[str, Any]) -> list[dict[str, Any]]:
    """The `run:` steps of the workflow's one job, after checking the rest is what we expect."""
    [job] = workflow["jobs"].values()
    steps = []
    for step in job["steps"]:
        if "uses" in step:
            assert step["uses"].startswith(KNOWN_ACTIONS), step["uses"]
            continue
        installed = INSTALL.match(step["run"].strip())
        if installed:
            assert installed.group(1) == fibric.__version__  # the guide installs the version it documents
            continue
        steps.append(step)
    return steps


def run_github(ci: Ci, workflow: dict[str, Any], *, url: str | None = None) -> list[tuple[str, int, str]]:
    """Run the steps in order until one fails, as Actions does: (name, exit code, stdout + stderr) each."""
    context = {"vars.FIBRIC_URL": url or ci.url, "secrets.FIBRIC_PR_KEY": ci.keys["FIBRIC_PR_KEY"],
               "secrets.FIBRIC_APPLY_KEY": ci.keys["FIBRIC_APPLY_KEY"], "github.token": "ghs_test",
               "github.event.pull_request.number": PR_NUMBER}
    summary = ci.tmp / "step-summary.md"
    summary.write_text("")
    results = []
    for step in github_steps(workflow):
        env = {name: EXPRESSION.sub(lambda m: context[m.group(1)], str(value))
               for name, value in (step.get("env") or {}).items()}
        assert "${{" not in step["run"], "expressions belong in env:, not in the script"
        done = ci.shell(step["run"], {**env, "GITHUB_STEP_SUMMARY": str(summary),
                                      "GH_CALLS": str(ci.tmp / "gh-calls")})
        results.append((step["name"], done.returncode, done.stdout + done.stderr))
        if done.returncode != 0:
            break
    return results


def test_github_pull_request_validates_and_comments_the_diff_then_main_applies(ci: Ci) -> None:
    pull_request, main = parsed("github-pull-request"), parsed("github-main")
    assert main["on"]["push"]["branches"] == ["main"]
    assert "pull_request" in pull_request["on"]

    steps = run_github(ci, pull_request)
    assert [code for _, code, _ in steps] == [0, 0, 0], steps
    posted = (ci.checkout / "fibric-diff.md").read_text()
    assert "**4** to create; 0 unchanged." in posted
    assert "| create | Operator | ship-risk | (whole object) |" in posted
    assert (ci.tmp / "step-summary.md").read_text() == posted
    call = (ci.tmp / "gh-calls").read_text().splitlines()
    assert call == ["GH_TOKEN=ghs_test", "pr", "comment", PR_NUMBER, "--body-file", "fibric-diff.md"]

    # The pull request's key only reads: its apply is refused and changes nothing.
    refused = ci.shell("fibric apply -f specs/ --apply-set gitops",
                       {"FIBRIC_URL": ci.url, "FIBRIC_KEY": ci.keys["FIBRIC_PR_KEY"]})
    assert refused.returncode != 0 and "insufficient_scope" in refused.stderr, refused.stderr

    steps = run_github(ci, main)
    assert [code for _, code, _ in steps] == [0, 0], steps
    assert "operator/ship-risk created" in steps[-1][2]
    env: dict[str, str | None] = {"FIBRIC_URL": ci.url, "FIBRIC_KEY": ci.keys["FIBRIC_PR_KEY"]}
    assert run(["diff", "-f", str(ci.checkout / "specs"), "--apply-set", "gitops"], env).exit_code == 0

    # The next pull request edits a label and removes the webhook: the comment shows both.
    operator = ci.checkout / "specs" / "operator.yaml"
    operator.write_text(operator.read_text().replace("team: ops", "team: sre"))
    (ci.checkout / "specs" / "webhook.yaml").unlink()
    steps = run_github(ci, pull_request)
    assert [code for _, code, _ in steps] == [0, 0, 0], steps
    posted = (ci.checkout / "fibric-diff.md").read_text()
    assert "| update | Operator | ship-risk | `labels.team` |" in posted
    assert "| delete | Webhook | ops-channel | (whole object) |" in posted

    # Merged: applied with --prune, the webhook is gone.
    steps = run_github(ci, main)
    assert [code for _, code, _ in steps] == [0, 0], steps
    assert "webhook/ops-channel pruned" in steps[-1][2]


def test_github_pull_request_fails_on_invalid_specs_and_on_an_unreachable_server(ci: Ci) -> None:
    pull_request = parsed("github-pull-request")
    steps = run_github(ci, pull_request, url="http://127.0.0.1:9")
    assert [(name, code) for name, code, _ in steps][-1] == ("Diff against the live state", 2), steps
    assert not (ci.tmp / "gh-calls").exists()  # nothing is posted when the diff could not be made

    operator = ci.checkout / "specs" / "operator.yaml"
    operator.write_text(operator.read_text().replace("policy: guard", "policy: nope"))
    steps = run_github(ci, pull_request)
    assert [(name, code) for name, code, _ in steps] == [("Validate the specs", 2)], steps
    assert re.search(r"specs/operator\.yaml:\d+:3: spec\.policy: policy 'nope' does not exist", steps[0][2])


# --- GitLab CI -----------------------------------------------------------------------------------

GITLAB_RESERVED = {"stages", "default", "variables", "include", "workflow", "image"}


def gitlab_script(pipeline: dict[str, Any], job_name: str) -> str:
    """The job's script; the default before_script only installs the CLI, which is checked, not run."""
    for line in pipeline["default"]["before_script"]:
        installed = INSTALL.match(line)
        assert installed and installed.group(1) == fibric.__version__, line
    return "\n".join(pipeline[job_name]["script"])


def run_gitlab(ci: Ci, pipeline: dict[str, Any], job_name: str) -> subprocess.CompletedProcess[str]:
    """One job as a runner runs it: CI/CD variables, then the job's own (with $VARIABLE expanded)."""
    project = {"FIBRIC_URL": ci.url, **ci.keys}
    job_vars = {name: re.sub(r"\$(\w+)", lambda m: project[m.group(1)], str(value))
                for name, value in (pipeline[job_name].get("variables") or {}).items()}
    return ci.shell(gitlab_script(pipeline, job_name), {**project, **job_vars})


def test_gitlab_merge_request_keeps_the_diff_as_an_artifact_and_the_default_branch_applies(ci: Ci) -> None:
    pipeline = parsed("gitlab")
    jobs = {name for name in pipeline if name not in GITLAB_RESERVED}
    assert jobs == {"fibric-validate", "fibric-diff", "fibric-apply"}
    rules = {job: [rule["if"] for rule in pipeline[job]["rules"]] for job in jobs}
    assert rules["fibric-diff"] == ['$CI_PIPELINE_SOURCE == "merge_request_event"']
    assert rules["fibric-apply"] == ["$CI_COMMIT_BRANCH == $CI_DEFAULT_BRANCH"]

    validated = run_gitlab(ci, pipeline, "fibric-validate")
    assert validated.returncode == 0, validated.stderr
    diffed = run_gitlab(ci, pipeline, "fibric-diff")
    assert diffed.returncode == 0, diffed.stderr
    [artifact] = pipeline["fibric-diff"]["artifacts"]["paths"]
    assert "**4** to create" in (ci.checkout / artifact).read_text()
    assert "**4** to create" in diffed.stdout  # and in the job log

    applied = run_gitlab(ci, pipeline, "fibric-apply")
    assert applied.returncode == 0, applied.stderr
    assert "policy/guard created" in applied.stdout
    again = run_gitlab(ci, pipeline, "fibric-diff")
    assert again.returncode == 0, again.stderr
    assert "No drift" in (ci.checkout / artifact).read_text()

    broken = run_gitlab(ci, {**pipeline, "fibric-diff": {**pipeline["fibric-diff"],
                                                         "variables": {"FIBRIC_KEY": "sk_live_00"}}},
                        "fibric-diff")
    assert broken.returncode == 2, broken.stdout + broken.stderr  # a bad key fails the job; drift does not
