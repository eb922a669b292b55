# Builds the account, container and object rings of a one-node Swift: one
# replica, one device "d1" on 127.0.0.1, in one Python process (three
# swift-ring-builder runs per ring cost a Python start-up each).
#
#   /usr/bin/python3 rings.py SWIFT_DIR ACCOUNT_PORT CONTAINER_PORT OBJECT_PORT
import os
import sys

from swift.common.ring import RingBuilder

swift_dir = sys.argv[1]
for name, port in zip(("account", "container", "object"), sys.argv[2:5]):
    builder = RingBuilder(8, 1, 1)  # 2^8 partitions, 1 replica, 1 h
    builder.add_dev({"region": 1, "zone": 1, "ip": "127.0.0.1", "port": int(port),
                     "device": "d1", "weight": 100})
    builder.rebalance()
    builder.save(os.path.join(swift_dir, name + ".builder"))
    builder.get_ring().save(os.path.join(swift_dir, name + ".ring.gz"))
