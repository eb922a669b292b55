# Defaults for building a Debian root filesystem. Every variable can be set
# by the caller (environment or recipe) before the build.
export DISTRO_NAME=debian
export DIB_RELEASE=${DIB_RELEASE:-bookworm}
export DIB_INIT_SYSTEM=systemd

# The mirror: DIB's variables first, else the mirror the build host's own
# apt sources name (strata reads them and exports STRATA_HOST_*).
if [ -n "${DIB_DEBIAN_DISTRIBUTION_MIRROR:-}" ]; then
	DIB_DISTRIBUTION_MIRROR=$DIB_DEBIAN_DISTRIBUTION_MIRROR
fi
export DIB_DISTRIBUTION_MIRROR=${DIB_DISTRIBUTION_MIRROR:-${STRATA_HOST_DEBIAN_MIRROR:-}}
if [ -z "${DIB_DEBIAN_SECURITY_MIRROR:-}" ]; then
	if [ -n "${STRATA_HOST_DEBIAN_SECURITY_MIRROR:-}" ] && [ "$DIB_DISTRIBUTION_MIRROR" = "${STRATA_HOST_DEBIAN_MIRROR:-}" ]; then
		DIB_DEBIAN_SECURITY_MIRROR=$STRATA_HOST_DEBIAN_SECURITY_MIRROR
	elif [ "${DIB_DISTRIBUTION_MIRROR%/debian}" != "$DIB_DISTRIBUTION_MIRROR" ]; then
		DIB_DEBIAN_SECURITY_MIRROR=${DIB_DISTRIBUTION_MIRROR%/debian}/debian-security
	fi
fi
export DIB_DEBIAN_SECURITY_MIRROR=${DIB_DEBIAN_SECURITY_MIRROR:-}
export DIB_DEBIAN_COMPONENTS=${DIB_DEBIAN_COMPONENTS:-main}
# Leave documentation, man pages and translations out of the image
# (copyright files stay). Set DIB_DEBIAN_KEEP_DOCS=1 to keep them.
export DIB_DEBIAN_KEEP_DOCS=${DIB_DEBIAN_KEEP_DOCS:-0}
