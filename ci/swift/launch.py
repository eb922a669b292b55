# Runs one Swift server (proxy, account, container or object) in the
# foreground with a private configuration directory.
#
#   /usr/bin/python3 launch.py SWIFT_DIR CONF_FILE APP_SECTION
#
# Swift reads /etc/swift/swift.conf (hash prefix/suffix, storage policies)
# when its modules are imported; set_swift_dir, called before the server
# module is imported, makes it read SWIFT_DIR/swift.conf instead, so a
# test's objects never depend on the host's Swift configuration.
import sys

from swift.common.utils import set_swift_dir

set_swift_dir(sys.argv[1])

from swift.common.wsgi import run_wsgi  # noqa: E402  (after set_swift_dir)

sys.exit(run_wsgi(sys.argv[2], sys.argv[3], verbose=True))
