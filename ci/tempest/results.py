#!/usr/bin/python3
"""Reads a tempest run's subunit stream and judges it (ci/tempest/run.sh).

    results.py --listed LISTED [--all ALL] --expected EXPECTED < results.subunit

LISTED is `tempest run --list-tests` of this run (one test id per line),
ALL the same for the whole plugin (default LISTED; differs when the run was
narrowed with TEMPEST_REGEX), EXPECTED the expected-failure list
(ci/tempest/expected-failures.txt). Every listed test
ends as passed, failed (by itself, or because its class's setUpClass
failed: its tests never ran) or skipped. Prints the plugin's table and each
failure with the first line of its reason, then exits 1 if

  - a test failed that is not on the expected-failure list,
  - a listed test failed for another reason than the one it is listed with
    (the entry's match text is not in the failure),
  - a listed test passed or was skipped (the list only shrinks: remove it),
  - an entry names no test of the plugin, or a class fixture
    (setUpClass, tearDownClass) failed without an entry.
"""

import argparse
import re
import sys

import subunit
import testtools

ID_ATTRS = re.compile(r"\[.*\]$")
FIXTURE = re.compile(r"^(setUpClass|tearDownClass) \((.+)\)$")


def base_id(test_id):
    """A test id without its [id-...] attributes."""
    return ID_ATTRS.sub("", test_id)


def read_expected(path):
    """Entries: test id -> (capability, match, why)."""
    out = {}
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = [p.strip() for p in line.split("|")]
            if len(parts) != 4 or not all(parts):
                sys.exit(f"{path}:{n}: want 'test id | capability | text the failure contains | why'")
            test_id, capability, match, why = parts
            if test_id in out:
                sys.exit(f"{path}:{n}: {test_id} is listed twice")
            out[test_id] = (capability, match, why)
    return out


def details_text(details):
    chunks = []
    for name, content in (details or {}).items():
        try:
            chunks.append(name + ": " + content.as_text())
        except Exception:  # binary attachments: not a reason
            pass
    return "\n".join(chunks)


def first_reason(text):
    """The most telling line of a failure: the exception's."""
    lines = [l.strip() for l in text.splitlines() if l.strip()]
    for l in reversed(lines):
        if re.match(r"^[\w.]+(Error|Exception|Failure|Timeout\w*|NotFound|BadRequest|Conflict|Forbidden|Unauthorized)\b.*:", l) \
                or l.startswith("Details:") or l.startswith("reason:"):
            return l[:300]
    return (lines[-1] if lines else "(no details)")[:300]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--listed", required=True)
    ap.add_argument("--all", help="every test of the plugin (default: --listed)")
    ap.add_argument("--expected", required=True)
    args = ap.parse_args()

    with open(args.listed) as f:
        listed = [base_id(l.strip()) for l in f if l.strip()]
    plugin = listed
    if args.all:
        with open(args.all) as f:
            plugin = [base_id(l.strip()) for l in f if l.strip()]
    expected = read_expected(args.expected)

    results = {}

    def on_test(test):
        results[test["id"]] = test

    stream = subunit.ByteStreamToStreamResult(sys.stdin.buffer, non_subunit_name="stdout")
    result = testtools.StreamToDict(on_test)
    result.startTestRun()
    try:
        stream.run(result)
    finally:
        result.stopTestRun()

    by_base = {}
    fixtures = {}
    for tid, t in results.items():
        m = FIXTURE.match(tid)
        if m:
            fixtures[(m.group(1), m.group(2))] = t
        else:
            by_base[base_id(tid)] = t

    final = {}  # listed test -> (status, reason text)
    for tid in listed:
        cls = tid.rsplit(".", 1)[0]
        t = by_base.get(tid)
        setup = fixtures.get(("setUpClass", cls))
        if t is not None and t["status"] in ("success", "xfail"):
            final[tid] = ("passed", "")
        elif t is not None and t["status"] == "skip":
            final[tid] = ("skipped", details_text(t["details"]))
        elif t is not None and t["status"] in ("fail", "uxsuccess"):
            final[tid] = ("failed", details_text(t["details"]))
        elif setup is not None and setup["status"] == "fail":
            final[tid] = ("failed", "setUpClass of its class failed:\n" + details_text(setup["details"]))
        elif setup is not None and setup["status"] == "skip":
            final[tid] = ("skipped", details_text(setup["details"]))
        else:
            final[tid] = ("failed", "no result: the test did not run (the run was cut short?)")

    counts = {s: sum(1 for v in final.values() if v[0] == s) for s in ("passed", "failed", "skipped")}
    print()
    print("trove-tempest-plugin results")
    print(f"  listed {len(listed)} · run {counts['passed'] + counts['failed']} · passed {counts['passed']}"
          f" · failed {counts['failed']} · skipped {counts['skipped']}")
    print()
    width = max((len(t) for t in listed), default=10)
    problems = []
    for tid in sorted(listed):
        status, text = final[tid]
        entry = expected.get(tid)
        note = ""
        if status == "failed":
            if entry is None:
                problems.append(f"{tid} failed and is not on the expected-failure list: {first_reason(text)}")
                note = "UNEXPECTED: " + first_reason(text)
            elif entry[1] not in text:
                problems.append(f"{tid} failed, but not for its listed reason ({entry[1]!r} is not in the failure): {first_reason(text)}")
                note = f"UNEXPECTED REASON (listed: {entry[0]}): " + first_reason(text)
            else:
                note = f"expected ({entry[0]}): {entry[2]}"
        elif status == "skipped":
            note = "skipped: " + first_reason(text)
            if entry is not None:
                problems.append(f"{tid} is on the expected-failure list but was skipped")
        elif entry is not None:
            problems.append(f"{tid} passed: remove it from the expected-failure list ({entry[0]})")
            note = "PASSED, but listed as expected to fail"
        print(f"  {status.upper():8} {tid.replace('trove_tempest_plugin.tests.scenario.', ''):{width - 37}}  {note}")

    for tid in expected:
        if tid not in plugin:
            problems.append(f"the expected-failure list names {tid}, which the plugin does not have")
    for (kind, cls), t in sorted(fixtures.items()):
        if kind == "tearDownClass" and t["status"] == "fail":
            problems.append(f"tearDownClass of {cls} failed (a class's clean-up, not on any list): {first_reason(details_text(t['details']))}")
    print()
    if problems:
        print("FAIL:")
        for p in problems:
            print("  - " + p)
        return 1
    print("OK: every failure is on ci/tempest/expected-failures.txt, for its reason; nothing listed passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
