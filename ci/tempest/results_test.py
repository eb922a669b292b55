#!/usr/bin/python3
"""Checks ci/tempest/results.py, the judge of make test-tempest, on subunit
streams made here: what it must fail and what it must let pass. run.sh runs
it before the suite (seconds), so a broken judge stops the run before any
VM boots.

    /usr/bin/python3 ci/tempest/results_test.py
"""

import io
import os
import subprocess
import sys
import tempfile
import unittest

import subunit

HERE = os.path.dirname(os.path.abspath(__file__))
P = "trove_tempest_plugin.tests.scenario."
BASIC = P + "test_instance_basic.TestInstanceBasicMariaDB"
BACKUP = P + "test_backup.TestBackupPostgreSQL"
PLUGIN = [BASIC + ".test_configuration", BASIC + ".test_user_database",
          BACKUP + ".test_backup_full", BACKUP + ".test_backup_incremental"]
NOT_A_ROUTE = "POST /v1.0/p/backups is not a route of this API"


def stream(events):
    """A subunit v2 stream: events are (test id, status, reason text)."""
    buf = io.BytesIO()
    out = subunit.StreamResultToBytes(buf)
    for tid, status, text in events:
        out.status(test_id=tid, test_status="inprogress")
        if text:
            out.status(test_id=tid, file_name="traceback", file_bytes=text.encode(),
                       mime_type="text/plain;charset=utf8", eof=True)
        out.status(test_id=tid, test_status=status)
    return buf.getvalue()


class Judge(unittest.TestCase):
    def judge(self, events, expected="", listed=None):
        with tempfile.TemporaryDirectory() as d:
            paths = {}
            for name, lines in (("listed", listed or PLUGIN), ("all", PLUGIN)):
                paths[name] = os.path.join(d, name)
                with open(paths[name], "w") as f:
                    f.write("".join(t + "[id-0000]\n" for t in lines))
            paths["expected"] = os.path.join(d, "expected")
            with open(paths["expected"], "w") as f:
                f.write("# comment\n" + expected)
            r = subprocess.run(
                [sys.executable, os.path.join(HERE, "results.py"), "--listed", paths["listed"],
                 "--all", paths["all"], "--expected", paths["expected"]],
                input=stream(events), capture_output=True)
            return r.returncode, r.stdout.decode() + r.stderr.decode()

    def entry(self, tid, match="is not a route of this API"):
        return f"{tid} | backups (issue 14) | {match} | no /backups API yet\n"

    def test_all_passed(self):
        rc, out = self.judge([(t + "[id-0000]", "success", "") for t in PLUGIN])
        self.assertEqual(rc, 0, out)
        self.assertIn("listed 4 · run 4 · passed 4 · failed 0 · skipped 0", out)

    def test_unlisted_failure_fails_the_run(self):
        events = [(t + "[id-0000]", "success", "") for t in PLUGIN[1:]]
        events.append((PLUGIN[0] + "[id-0000]", "fail", "AssertionError: 555 != 666"))
        rc, out = self.judge(events)
        self.assertEqual(rc, 1, out)
        self.assertIn("not on the expected-failure list", out)
        self.assertIn("AssertionError: 555 != 666", out)

    def test_setupclass_failure_as_listed(self):
        events = [(t + "[id-0000]", "success", "") for t in PLUGIN[:2]]
        events.append((f"setUpClass ({BACKUP})", "fail", "NotFound: " + NOT_A_ROUTE))
        expected = self.entry(PLUGIN[2]) + self.entry(PLUGIN[3])
        rc, out = self.judge(events, expected)
        self.assertEqual(rc, 0, out)
        self.assertIn("listed 4 · run 4 · passed 2 · failed 2 · skipped 0", out)

    def test_listed_failure_for_another_reason_fails_the_run(self):
        events = [(t + "[id-0000]", "success", "") for t in PLUGIN[:2]]
        events.append((f"setUpClass ({BACKUP})", "fail", "TimeoutException: instance not ACTIVE"))
        rc, out = self.judge(events, self.entry(PLUGIN[2]) + self.entry(PLUGIN[3]))
        self.assertEqual(rc, 1, out)
        self.assertIn("not for its listed reason", out)

    def test_listed_test_that_passes_fails_the_run(self):
        rc, out = self.judge([(t + "[id-0000]", "success", "") for t in PLUGIN],
                             self.entry(PLUGIN[2]))
        self.assertEqual(rc, 1, out)
        self.assertIn("passed: remove it from the expected-failure list", out)

    def test_test_without_result_is_a_failure(self):
        rc, out = self.judge([(t + "[id-0000]", "success", "") for t in PLUGIN[1:]])
        self.assertEqual(rc, 1, out)
        self.assertIn("did not run", out)

    def test_entry_outside_the_plugin_fails_the_run(self):
        rc, out = self.judge([(t + "[id-0000]", "success", "") for t in PLUGIN],
                             self.entry(P + "test_backup.TestBackupMariaDB.test_backup_full"))
        self.assertEqual(rc, 1, out)
        self.assertIn("which the plugin does not have", out)

    def test_narrowed_run_ignores_entries_it_did_not_run(self):
        rc, out = self.judge([(t + "[id-0000]", "success", "") for t in PLUGIN[:2]],
                             self.entry(PLUGIN[2]), listed=PLUGIN[:2])
        self.assertEqual(rc, 0, out)
        self.assertIn("listed 2 · run 2 · passed 2", out)


if __name__ == "__main__":
    unittest.main()
