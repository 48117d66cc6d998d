"""checkov over infra/ with the built-in Bicep checks and the custom policies in infra/policies."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.infra.bicep import INFRA, REPO

pytestmark = pytest.mark.infra

POLICIES = INFRA / "policies"
CUSTOM_IDS = ("CKV2_RELAY_1", "CKV2_RELAY_2", "CKV2_RELAY_3", "CKV2_RELAY_4", "CKV2_RELAY_5")


@dataclass(frozen=True)
class Report:
    summary: dict[str, Any]
    passed: list[dict[str, Any]]
    failed: list[dict[str, Any]]
    skipped: list[dict[str, Any]]


def _checkov() -> Path:
    path = Path(os.environ.get("CHECKOV", str(REPO / ".venv-checkov" / "bin" / "checkov")))
    if not path.is_absolute():
        path = REPO / path
    if not path.exists():
        pytest.fail(f"checkov not found at {path}: run `make setup` or set $CHECKOV")
    return path


def run_checkov(directory: Path) -> Report:
    completed = subprocess.run(
        [
            str(_checkov()),
            "-d",
            str(directory),
            "--framework",
            "bicep",
            "--skip-download",
            "--external-checks-dir",
            str(POLICIES),
            "-o",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
        cwd=REPO,
    )
    output = json.loads(completed.stdout)
    reports = output if isinstance(output, list) else [output]
    (bicep,) = [r for r in reports if r.get("check_type") == "bicep"]
    results = bicep["results"]
    return Report(
        bicep["summary"],
        results["passed_checks"],
        results["failed_checks"],
        results["skipped_checks"],
    )


@pytest.fixture(scope="module")
def infra_report() -> Report:
    return run_checkov(INFRA)


def test_checkov_infra_parses_every_file(infra_report: Report) -> None:
    assert infra_report.summary["parsing_errors"] == 0
    assert infra_report.summary["resource_count"] > 20


def test_checkov_infra_has_no_failed_checks(infra_report: Report) -> None:
    failed = [(c["check_id"], c["resource"], c["file_path"]) for c in infra_report.failed]
    assert failed == []


def test_checkov_custom_policies_ran_and_passed(infra_report: Report) -> None:
    ran = {c["check_id"] for c in infra_report.passed}
    assert set(CUSTOM_IDS) <= ran


def test_checkov_cosmos_builtin_local_auth_check_passed(infra_report: Report) -> None:
    # checkov has its own Cosmos DB check (CKV_AZURE_140), so there is no custom one.
    passed = {(c["check_id"], c["resource"]) for c in infra_report.passed}
    assert ("CKV_AZURE_140", "Microsoft.DocumentDB/databaseAccounts.account") in passed


def test_checkov_every_skip_has_a_reason(infra_report: Report) -> None:
    unexplained = [
        c["check_id"]
        for c in infra_report.skipped
        if len(str(c.get("check_result", {}).get("suppress_comment", "")).strip()) < 20
    ]
    assert unexplained == []


_BAD = """
resource ns 'Microsoft.ServiceBus/namespaces@2022-10-01-preview' = {
  name: 'sb-bad'
  location: 'westeurope'
  sku: {
    name: 'Standard'
  }
  properties: {
    disableLocalAuth: false
  }
}

resource topic 'Microsoft.ServiceBus/namespaces/topics@2022-10-01-preview' = [for t in ['a']: {
  parent: ns
  name: t
  properties: {
    requiresDuplicateDetection: false
  }
}]

resource queue 'Microsoft.ServiceBus/namespaces/queues@2022-10-01-preview' = {
  parent: ns
  name: 'q'
  properties: {
    maxDeliveryCount: 10
  }
}

resource ai 'Microsoft.Insights/components@2020-02-02' = {
  name: 'ai-bad'
  location: 'westeurope'
  kind: 'web'
  properties: {
    Application_Type: 'web'
  }
}

resource log 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: 'log-bad'
  location: 'westeurope'
  properties: {
    retentionInDays: 30
    features: {
      disableLocalAuth: false
    }
  }
}
"""


def test_checkov_custom_policies_local_auth_on_and_no_dedup_fail(tmp_path: Path) -> None:
    (tmp_path / "bad.bicep").write_text(_BAD, encoding="utf-8")
    report = run_checkov(tmp_path)
    assert report.summary["parsing_errors"] == 0
    failed = {c["check_id"] for c in report.failed}
    assert set(CUSTOM_IDS) <= failed
