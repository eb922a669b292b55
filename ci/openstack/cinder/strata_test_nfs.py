# TEST ONLY: the compute tier's Cinder volume driver (ci/openstack/compute-start.sh).
# Never deploy this: it exists so that strata's tests can exercise an online
# extend on a stack whose only block storage is Cinder's NFS driver over a
# tmpfs.
"""Cinder's NFS driver, allowed to extend an attached raw volume.

The stock NfsDriver refuses to extend an attached volume (Cinder bug
1870367: a qcow2 file grown under a running qemu). For a raw file the grow
is a truncate; Cinder's volume manager then sends Nova the
"volume-extended" event and Nova has libvirt resize the guest's disk
(virDomainBlockResize), which is what an online extend on a real backend
does. Detached volumes, and anything not raw, take the stock path.
"""

import os

from oslo_log import log as logging
from oslo_utils import units

from cinder import context
from cinder import exception
from cinder import objects
from cinder.volume.drivers import nfs

LOG = logging.getLogger(__name__)


class OnlineExtendNfsDriver(nfs.NfsDriver):
    """NfsDriver whose extend_volume also grows an attached raw file."""

    def extend_volume(self, volume, new_size):
        if not self._is_volume_attached(volume):
            return super().extend_volume(volume, new_size)
        meta = objects.Volume.get_by_id(context.get_admin_context(), volume.id).admin_metadata or {}
        fmt = meta.get('format', 'raw')
        if fmt != 'raw':
            raise exception.ExtendVolumeError(
                reason='test driver: online extend of a %s file is not supported (volume %s)' % (fmt, volume.id))
        extend_by = int(new_size) - volume.size
        if not self._is_share_eligible(volume.provider_location, extend_by):
            raise exception.ExtendVolumeError(
                reason='Insufficient space to extend volume %s to %sG' % (volume.id, new_size))
        path = self.local_path(volume)
        LOG.info('TEST ONLY: extending attached volume %s online: truncate %s to %sG', volume.id, path, new_size)
        os.truncate(path, int(new_size) * units.Gi)
