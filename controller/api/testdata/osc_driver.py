"""Run many `openstack` commands in one Python process.

The controller/api tests drive the controller with Debian's real
`openstack` client. Started once per command, the client spends about two
seconds of CPU starting Python and importing its plugins before it sends
a request; this driver pays that once per test client instead.

    <the interpreter on openstack's #! line> osc_driver.py /usr/bin/openstack

Requests arrive on fd 3, one JSON list of arguments per line (argv after
"openstack"). For each, the driver does what /usr/bin/openstack does --
sys.exit(openstackclient.shell.main(argv)) -- with a new shell object,
sys.stdout and sys.stderr captured, stdin on /dev/null, and the process's
logging and warnings state put back as it was afterwards, and writes one
JSON line on fd 4: {"code": exit status, "stdout": base64, "stderr":
base64}. The environment is the one the driver was started with (the
openrc's), as it would be for each separate process. Anything written to
the real fd 1 or 2 escaped the capture; the Go side treats that as an
error.
"""

import base64
import io
import json
import logging
import os
import sys
import traceback
import warnings

# cliff names the program (App.NAME, argparse's prog) after sys.argv[0]
# when it is imported; make that the real client's path first.
OPENSTACK = sys.argv[1]
sys.argv = [OPENSTACK]

from openstackclient import shell  # noqa: E402  (after sys.argv is set)


def exit_status(code):
    """What the process would exit with after sys.exit(code)."""
    if code is None:
        return 0, ""
    if isinstance(code, int):
        return code & 0xFF, ""
    # sys.exit("message") prints the message and exits 1.
    return 1, "%s\n" % code


def snapshot_logging():
    manager = logging.Logger.manager
    levels = {name: lg.level for name, lg in manager.loggerDict.items()
              if isinstance(lg, logging.Logger)}
    root = logging.getLogger()
    return levels, root.level, list(root.handlers)


def restore_logging(state):
    levels, root_level, root_handlers = state
    manager = logging.Logger.manager
    for name, level in levels.items():
        # Loggers first made during the command (by a module imported on
        # first use) keep what that import gave them: it is not imported
        # again, and the client sets the levels it cares about on each run.
        manager.loggerDict[name].setLevel(level)
    root = logging.getLogger()
    root.setLevel(root_level)
    for h in list(root.handlers):
        if h not in root_handlers:
            root.removeHandler(h)
            h.close()


def capture_stream(like):
    raw = io.BytesIO()
    text = io.TextIOWrapper(raw, encoding=like.encoding, errors=like.errors,
                            write_through=True)
    return raw, text


def run(argv):
    out_raw, out = capture_stream(sys.__stdout__)
    err_raw, err = capture_stream(sys.__stderr__)
    devnull = open(os.devnull)
    saved = sys.stdin, sys.stdout, sys.stderr, sys.argv
    log_state = snapshot_logging()
    sys.stdin, sys.stdout, sys.stderr = devnull, out, err
    sys.argv = [OPENSTACK] + argv
    # osc-lib collects --timing data in a list on the class.
    shell.OpenStackShell.timing_data = []
    code = 1
    try:
        # catch_warnings puts the filters back afterwards (the client sets
        # its own from the verbosity) and resets the "already shown"
        # registries, so each command warns as a fresh process would.
        with warnings.catch_warnings():
            try:
                code, msg = exit_status(shell.main(argv))
            except SystemExit as e:
                code, msg = exit_status(e.code)
            except BaseException:
                # An uncaught exception: Python prints it and exits 1.
                traceback.print_exc()
                code, msg = 1, ""
            if msg:
                err.write(msg)
    finally:
        out.flush()
        err.flush()
        sys.stdin, sys.stdout, sys.stderr, sys.argv = saved
        restore_logging(log_state)
        devnull.close()
    reply = {
        "code": code,
        "stdout": base64.b64encode(out_raw.getvalue()).decode(),
        "stderr": base64.b64encode(err_raw.getvalue()).decode(),
    }
    out.detach()
    err.detach()
    return reply


def main():
    requests = os.fdopen(3, "r", encoding="utf-8")
    replies = os.fdopen(4, "w", encoding="utf-8")
    for line in requests:
        argv = json.loads(line)
        replies.write(json.dumps(run(argv)) + "\n")
        replies.flush()


if __name__ == "__main__":
    main()
