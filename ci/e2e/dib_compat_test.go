//go:build e2e

package e2e

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"strata/builder/aptsource"
	"strata/builder/boottest"
	"strata/builder/dib"
	"strata/builder/manifest"
	"strata/builder/qemu"
)

// The DIB compatibility suite: diskimage-builder's own elements, as
// Debian's python3-diskimage-builder installs them, built with strata
// beside strata's OS elements through the disk-image-create entry point
// with DIB's own flags, and each element's promised effect checked in the
// image. Nothing is fetched from anywhere but the Debian mirror the other
// builds use: source-repositories reads a git repository and a file this
// test makes. These builds cover every element that supports Debian:
//
//	A  Debian 12, tar: everything that needs no kernel (and no-final-image)
//	A2 Debian 12, tar: the elements that only install many packages (a
//	   compiler, the POSIX utilities, InfiniBand); minutes of dpkg, so
//	   `make e2e-all` builds it, not `make test`
//	B  Debian 13, qcow2+tar, booted under UEFI: DIB's block-device-efi
//	   layout, the kernel elements, and a datastore (Redis + the agent)
//	C  Debian 13, images/debian-minimal.yaml: strata's vm debian-minimal
//	D  Debian 12, qcow2, booted under BIOS: ELEMENTS_PATH set to DIB's own
//	   element tree, vm block-device-mbr debian-minimal
//
// The table below is the compatibility table: every element of DIB's
// tree has a row, and docs/dib-compat.md must say the same.

// compatStatus is what strata does with one of DIB's elements.
type compatStatus string

const (
	works       compatStatus = "works"        // built and its effect checked
	ownElement  compatStatus = "strata's own" // strata's element or builder stands in; effect checked
	refused     compatStatus = "refused"      // refused before anything runs, with the reason
	notOffline  compatStatus = "not testable offline"
	notHere     compatStatus = "not testable here"
	notDebian   compatStatus = "not for Debian"
	failsDebian compatStatus = "fails on Debian"
)

type compatRow struct {
	status compatStatus
	image  string // "A", "B" for built elements
	// check looks for the element's effect in the image.
	check func(*imageTree) error
	// refusal is what the error says, for refused elements.
	refusal string
}

func built(image string, check func(*imageTree) error) compatRow {
	return compatRow{status: works, image: image, check: check}
}

func own(image string, check func(*imageTree) error) compatRow {
	return compatRow{status: ownElement, image: image, check: check}
}

func refuse(msg string) compatRow { return compatRow{status: refused, refusal: msg} }

func compatTable() map[string]compatRow {
	return map[string]compatRow{
		// Built in A (Debian 12, tar).
		"apt-conf":                    built("A", file("etc/apt/apt.conf", `APT::Get::Assume-Yes "true";`)),
		"apt-preferences":             built("A", file("etc/apt/preferences", "Package: dib-compat-pinned", "Pin: version 1.0")),
		"apt-sources":                 built("A", file("etc/apt/sources.list", "# written by the DIB compatibility test")),
		"cache-url":                   built("A", exists("usr/local/bin/cache-url")),
		"cloud-init":                  built("A", pkg("cloud-init")),
		"cloud-init-datasources":      built("A", file("etc/cloud/cloud.cfg.d/91-dib-cloud-init-datasources.cfg", "NoCloud")),
		"cloud-init-disable-resizefs": built("A", notInFile("etc/cloud/cloud.cfg", "\n - resizefs\n", "\n - growpart\n")),
		"cloud-init-nocloud":          built("A", exists("var/lib/cloud/seed/nocloud/user-data", "var/lib/cloud/seed/nocloud/meta-data")),
		"debian":                      built("A", all(user("debian"), file("etc/sudoers.d/debian-cloud-init", "debian ALL=(ALL) NOPASSWD:ALL"), pkg("cloud-utils"))),
		"devuser":                     built("A", all(user("devuser"), file("etc/sudoers.d/devuser", "NOPASSWD"), file("home/devuser/.ssh/authorized_keys", "dib-compat-devuser-key"))),
		"dhcp-all-interfaces":         built("A", exists("usr/local/sbin/dhcp-all-interfaces.sh", "etc/udev/rules.d/99-dhcp-all-interfaces.rules")),
		"dib-init-system":             built("A", file("usr/local/bin/dib-init-system", "systemd")),
		"dib-python":                  built("A", file("etc/dib-contracts/dib-python", "Python 3")), // its link exists while the build runs
		"disable-nouveau":             built("A", file("etc/modprobe.d/disable-nouveau.conf", "blacklist nouveau")),
		"dkms":                        built("A2", all(pkg("dkms"), hookRan("post-install.d", "97-dkms", "dkms"))), // no kernel in A2: nothing for it to build
		"dracut-network":              built("A", nothing),
		"dynamic-login":               built("A", exists("usr/local/bin/dynamic-login", "etc/systemd/system/multi-user.target.wants/dynamic-login.service")),
		"element-manifest":            built("A", file("etc/dib-manifests/dib-element-manifest", "dib-contracts", "devuser")),
		"enable-serial-console":       built("A", exists("etc/udev/rules.d/99-serial-console.rules")),
		"ensure-venv":                 built("A", pkg("python3-venv")),
		"growvols":                    built("A", exists("usr/local/sbin/growvols")),
		"ibft-interfaces":             built("A", exists("etc/systemd/system/multi-user.target.wants/init-ibft-interfaces.service")),
		"install-static":              built("A", file("etc/dib-contracts/static-file", "installed by install-static")),
		"install-types":               built("A", file("etc/dib-contracts/installed-from", "source")),
		"journal-to-console":          built("A", file("etc/systemd/journald.conf.d/log-to-console.conf", "ForwardToConsole=true")),
		"local-config":                built("A", file("root/.ssh/authorized_keys", "dib-compat-local-key")),
		"manifests":                   built("A", all(file("etc/dib-manifests/dib_environment", "DIB_CONTRACTS_USER"), file("etc/dib-manifests/dib_arguments", "dib-contracts"), beside("A.d/dib-manifests/dib_arguments"))),
		"mellanox":                    built("A2", all(file("etc/udev/rules.d/81-mellanox.rules", "mlx4_en"), file("etc/modules", "mlx4_en\nmlx4_ib\nib_ipoib\nmlx5_ib\nib_umad\nib_uverbs\n"), pkg("ibverbs-utils"), pkg("opensm"))),
		"modprobe":                    built("A", file("etc/modprobe.d/blacklist.conf", "blacklist floppy")),
		"no-final-image":              built("A", notBeside("A.qcow2")),
		"openssh-server":              built("A", all(pkg("openssh-server"), exists("etc/systemd/system/multi-user.target.wants/ssh.service"))),
		"pip-and-virtualenv":          built("A", all(pkg("python3-pip"), pkg("python3-virtualenv"))),
		"pip-cache":                   built("A", hostCacheRun("pip/dib-compat-run")),
		"posix":                       built("A2", all(pkg("bc"), pkg("ed"), pkg("pax"), pkg("m4"))),
		"runtime-ssh-host-keys":       built("A", exists("etc/systemd/system/multi-user.target.wants/ssh-keygen.service")),
		"source-repositories":         built("A", all(file("opt/dib-contracts-repo/README", "dib-compat repository"), file("opt/dib-contracts-file", "dib-compat file"), file("etc/dib-manifests/dib-manifest-git-A", "dib-contracts-repo git /opt/dib-contracts-repo"))),
		"svc-map":                     built("A", all(file("usr/share/svc-map/services", "dib-contracts: dib-contracts"), exists("etc/systemd/system/multi-user.target.wants/dib-contracts.service"))),
		"sysctl":                      built("A", all(exists("usr/local/bin/sysctl-set-value"), file("etc/sysctl.d/net.ipv4.ip_forward.conf", "net.ipv4.ip_forward = 1"))),
		"sysprep":                     built("A", emptyFile("etc/machine-id")),

		// Built in B (Debian 13, disk-image-create, booted under UEFI).
		"baremetal":                 built("B", beside("B.vmlinuz", "B.initrd")),
		"block-device-efi":          built("B", nothing), // checked by the boot under UEFI and the partition table
		"cleanup-kernel-initrd":     built("B", nothing), // one kernel in the image: nothing to clean, and it must not fail
		"grub2":                     built("B", pkg("grub-efi-amd64-signed")),
		"iscsi-boot":                built("B", all(pkg("open-iscsi"), file("etc/iscsi/iscsi.initramfs", "ISCSI_AUTO=true"))),
		"modprobe-blacklist":        built("B", file("etc/modprobe.d/blacklist.conf", "blacklist pcspkr")),
		"select-boot-kernel-initrd": built("B", exists("usr/local/bin/select-boot-kernel-initrd")),

		// strata's own elements and builder stand in (DIB's tree is
		// searched after strata's); their effects are checked too.
		"base":             own("A", absent("usr/sbin/policy-rc.d")), // strata's base: its build-time policy is gone again
		"debian-minimal":   own("A", file("usr/lib/os-release", "bookworm")),
		"vm":               own("B", exists("boot/grub/grub.cfg")),
		"growroot":         own("B", exists("etc/systemd/system/strata-growroot.service")),
		"install-bin":      own("A", file("usr/local/bin/dib-contracts-hello", "hello from dib-contracts")),
		"package-installs": own("A", pkg("tree")),
		"pkg-map":          own("A", file("usr/share/pkg-map/dib-contracts", "contracts-tool")),
		"dib-run-parts":    own("A", all(exists("usr/local/bin/dib-run-parts"), file("etc/dib-contracts/run-parts", "first strict\nsecond\n"))),
		"block-device-gpt": own("", nil),      // mapped like block-device-efi (unit-tested in builder/blockdevice)
		"block-device-mbr": own("D", nothing), // checked by D's partition table and BIOS boot

		// Refused before anything runs.
		"bootloader":           refuse("finalise.d/50-bootloader uses IMAGE_BLOCK_DEVICE"),
		"lvm":                  refuse("operating-system is provided by more than one element"),
		"iso":                  refuse("uses a loop device (mount -o loop)"),
		"block-device-efi-lvm": refuse("LVM (an lvm node)"),
		"rax-nova-agent":       refuse("uses a loop device (mount -o loop)"),
		"deploy-baremetal":     refuse("is for ramdisk-image-create"),
		"deploy-kexec":         refuse("element deploy (a dependency of deploy-kexec) not found"),
		"deploy-targetcli":     refuse("is for ramdisk-image-create"),
		"deploy-tgtadm":        refuse("is for ramdisk-image-create"),
		"dracut-ramdisk":       refuse("is for ramdisk-image-create"),
		"hwburnin":             refuse("is for ramdisk-image-create"),
		"hwdiscovery":          refuse("is for ramdisk-image-create"),
		"ilo":                  refuse("is for ramdisk-image-create"),
		"ramdisk":              refuse("is for ramdisk-image-create"),
		"ramdisk-base":         refuse("is for ramdisk-image-create"),
		"debootstrap":          refuse("strata's debian-minimal builds the root filesystem"),
		"debian-systemd":       refuse("strata's debian-minimal builds the root filesystem"),
		"debian-upstart":       refuse("strata's debian-minimal builds the root filesystem"),
		"dpkg":                 refuse("strata's debian-minimal builds the root filesystem"),
		"docker":               refuse("operating-system is provided by more than one element"),
		"containerfile":        refuse("operating-system is provided by more than one element"),

		// Need the internet (PyPI, git hosts, vendor repositories) at build
		// time.
		"pypi":                 {status: notOffline},
		"python-brickclient":   {status: notOffline},
		"simple-init":          {status: notOffline},
		"keylime-agent":        {status: notOffline},
		"tpm-emulator":         {status: notOffline},
		"python-stow-versions": {status: notOffline},
		"proliant-tools":       {status: notOffline},
		"openstack-ci-mirrors": {status: notHere},

		// Fail on Debian as they would under disk-image-create.
		"stable-interface-names": {status: failsDebian},
		"dracut-regenerate":      {status: failsDebian},
		"hpdsa":                  {status: failsDebian},

		// Other distributions and architectures.
		"centos": {status: notDebian}, "centos-minimal": {status: notDebian}, "centos7": {status: notDebian},
		"fedora": {status: notDebian}, "fedora-minimal": {status: notDebian}, "fedora-container": {status: notDebian},
		"rhel": {status: notDebian}, "rhel7": {status: notDebian}, "rhel-common": {status: notDebian},
		"redhat-common": {status: notDebian}, "rpm-distro": {status: notDebian}, "yum": {status: notDebian},
		"yum-minimal": {status: notDebian}, "epel": {status: notDebian}, "oat-client": {status: notDebian},
		"disable-selinux": {status: notDebian}, "selinux-permissive": {status: notDebian},
		"opensuse": {status: notDebian}, "opensuse-minimal": {status: notDebian}, "zypper": {status: notDebian},
		"zypper-minimal": {status: notDebian}, "gentoo": {status: notDebian}, "ubuntu": {status: notDebian},
		"ubuntu-minimal": {status: notDebian}, "ubuntu-common": {status: notDebian}, "ubuntu-signed": {status: notDebian},
		"ubuntu-systemd-container": {status: notDebian}, "uboot": {status: notDebian}, "zipl": {status: notDebian},
	}
}

// imageTree is a built image read from its tar, plus where it was built.
type imageTree struct {
	files    map[string]string // regular files up to 1 MiB, by path without "./"
	names    map[string]bool   // every entry
	packages map[string]string // from the manifest
	outDir   string            // where the image and its siblings are
	cache    string
	run      string // this run's COMPAT_RUN, if the build had one
	manifest *manifest.Manifest
}

func readImageTree(t *testing.T, tarPath string) *imageTree {
	t.Helper()
	f, err := os.Open(tarPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	it := &imageTree{files: map[string]string{}, names: map[string]bool{}, packages: map[string]string{}, outDir: filepath.Dir(tarPath), cache: cache}
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("%s: %v", tarPath, err)
		}
		name := strings.TrimSuffix(strings.TrimPrefix(h.Name, "./"), "/")
		it.names[name] = true
		if h.Typeflag == tar.TypeReg && h.Size <= 1<<20 {
			b, _ := io.ReadAll(tr)
			it.files[name] = string(b)
		}
	}
	m, err := manifest.Read(strings.TrimSuffix(tarPath, ".tar") + ".manifest.json")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range m.Packages {
		it.packages[p.Name] = p.Version
	}
	it.manifest = m
	return it
}

func file(path string, wants ...string) func(*imageTree) error {
	return func(it *imageTree) error {
		c, ok := it.files[path]
		if !ok {
			return fmt.Errorf("/%s is not in the image", path)
		}
		for _, w := range wants {
			if !strings.Contains(c, w) {
				return fmt.Errorf("/%s does not contain %q:\n%s", path, w, c)
			}
		}
		return nil
	}
}

func emptyFile(path string) func(*imageTree) error {
	return func(it *imageTree) error {
		if c, ok := it.files[path]; !ok || c != "" {
			return fmt.Errorf("/%s is %q (present %v), want empty", path, c, ok)
		}
		return nil
	}
}

func notInFile(path string, unwanted ...string) func(*imageTree) error {
	return func(it *imageTree) error {
		c, ok := it.files[path]
		if !ok {
			return fmt.Errorf("/%s is not in the image", path)
		}
		for _, u := range unwanted {
			if strings.Contains(c, u) {
				return fmt.Errorf("/%s still contains %q", path, u)
			}
		}
		return nil
	}
}

func exists(paths ...string) func(*imageTree) error {
	return func(it *imageTree) error {
		for _, p := range paths {
			if !it.names[p] {
				return fmt.Errorf("/%s is not in the image", p)
			}
		}
		return nil
	}
}

func absent(path string) func(*imageTree) error {
	return func(it *imageTree) error {
		if it.names[path] {
			return fmt.Errorf("/%s is in the image", path)
		}
		return nil
	}
}

func pkg(name string) func(*imageTree) error {
	return func(it *imageTree) error {
		if it.packages[name] == "" {
			return fmt.Errorf("package %s is not installed", name)
		}
		return nil
	}
}

func user(name string) func(*imageTree) error {
	return func(it *imageTree) error {
		for _, l := range strings.Split(it.files["etc/passwd"], "\n") {
			if strings.HasPrefix(l, name+":") {
				return nil
			}
		}
		return fmt.Errorf("no user %s in /etc/passwd", name)
	}
}

func beside(names ...string) func(*imageTree) error {
	return func(it *imageTree) error {
		for _, n := range names {
			if _, err := os.Stat(filepath.Join(it.outDir, n)); err != nil {
				return fmt.Errorf("%s was not written beside the image: %v", n, err)
			}
		}
		return nil
	}
}

func notBeside(name string) func(*imageTree) error {
	return func(it *imageTree) error {
		if _, err := os.Stat(filepath.Join(it.outDir, name)); err == nil {
			return fmt.Errorf("%s was written", name)
		}
		return nil
	}
}

// hostCacheRun: the build host's cache holds this run's nonce at rel
// (dib-compat-run wrote it through pip-cache's mount).
func hostCacheRun(rel string) func(*imageTree) error {
	return func(it *imageTree) error {
		b, err := os.ReadFile(filepath.Join(it.cache, rel))
		if err != nil {
			return fmt.Errorf("the build host's cache has no %s: %v", rel, err)
		}
		if got := strings.TrimSpace(string(b)); got != it.run {
			return fmt.Errorf("the build host's %s says %q, not this run's %q: the mount was not there", rel, got, it.run)
		}
		return nil
	}
}

// hookRan: the element's hook ran in the build (or in the build whose
// cached tree this one started after), and did not fail.
func hookRan(phase, name, element string) func(*imageTree) error {
	return func(it *imageTree) error {
		for _, h := range it.manifest.Hooks {
			if h.Phase == phase && h.Name == name && h.Element == element {
				if h.Status != "ok" && h.Status != "cached" {
					return fmt.Errorf("%s/%s (%s): %s", phase, name, element, h.Status)
				}
				return nil
			}
		}
		return fmt.Errorf("%s/%s (%s) is not among the build's hooks", phase, name, element)
	}
}

func nothing(*imageTree) error { return nil }

func all(checks ...func(*imageTree) error) func(*imageTree) error {
	return func(it *imageTree) error {
		var errs []error
		for _, c := range checks {
			if err := c(it); err != nil {
				errs = append(errs, err)
			}
		}
		return errors.Join(errs...)
	}
}

// compatFixture is what the builds read from the host: a git repository
// and a file for source-repositories, keys for devuser and local-config,
// apt files, DIB's own install-types ahead of strata's. Its paths are
// values of variables the elements name, so they are in the builds' cache
// keys: it lives in the image cache under a name that is the digest of
// its content, the same from run to run (an unchanged build restarts late
// or not at all) and another as soon as anything in it changes.
type compatFixture struct {
	dir, home, first string
	env              []string
}

func newCompatFixture(t *testing.T, in *dib.Install) *compatFixture {
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	// apt-sources replaces the image's sources.list: the same mirror the
	// build uses (the host's), in the classic format.
	m, err := aptsource.Find("/")
	must(err)
	sources := "# written by the DIB compatibility test\ndeb " + m.Debian + " bookworm main\ndeb " + m.Debian + " bookworm-updates main\n"
	if m.Security != "" {
		sources += "deb " + m.Security + " bookworm-security main\n"
	}
	files := map[string]string{
		"repo/README":               "dib-compat repository\n",
		"file.txt":                  "dib-compat file\n",
		"home/.ssh/authorized_keys": "ssh-ed25519 AAAAC3 dib-compat-local-key\n",
		"devuser-keys":              "ssh-ed25519 AAAAC3 dib-compat-devuser-key\n",
		"apt.conf":                  "APT::Get::Assume-Yes \"true\";\n",
		"dpkg-manifest.json":        `{"packages": [{"package": "dib-compat-pinned", "arch": "amd64", "version": "1.0", "status": "ii "}]}`,
		"sources.list":              sources,
	}
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	h := sha256.New()
	fmt.Fprintf(h, "dib-compat-fixture-v1\ninstall-types=%s\n", filepath.Join(in.Elements, "install-types"))
	for _, n := range names {
		fmt.Fprintf(h, "%s %d\n%s", n, len(files[n]), files[n])
	}
	dir := filepath.Join(cache, "e2e", "dib-compat-"+hex.EncodeToString(h.Sum(nil))[:16])
	if _, err := os.Stat(filepath.Join(dir, ".complete")); err != nil {
		// Made beside its final name and renamed: a run that dies half-way
		// leaves no fixture a later run would take for whole.
		must(os.MkdirAll(filepath.Dir(dir), 0o755))
		tmp, err := os.MkdirTemp(filepath.Dir(dir), ".dib-compat-")
		must(err)
		defer os.RemoveAll(tmp)
		for _, n := range names {
			p := filepath.Join(tmp, n)
			must(os.MkdirAll(filepath.Dir(p), 0o755))
			must(os.WriteFile(p, []byte(files[n]), 0o644))
		}
		for _, args := range [][]string{{"init", "-q", "-b", "main"}, {"add", "README"},
			{"-c", "user.email=t@example.invalid", "-c", "user.name=test", "commit", "-qm", "init"}} {
			cmd := exec.Command("git", args...)
			cmd.Dir = filepath.Join(tmp, "repo")
			cmd.Env = append(os.Environ(), "GIT_AUTHOR_DATE=2025-01-01T00:00:00Z", "GIT_COMMITTER_DATE=2025-01-01T00:00:00Z")
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("git %v: %v\n%s", args, err, out)
			}
		}
		// DIB's own install-types, searched before strata's: the element
		// that links hooks into install.d while the build runs.
		must(os.MkdirAll(filepath.Join(tmp, "dib-first"), 0o755))
		must(os.Symlink(filepath.Join(in.Elements, "install-types"), filepath.Join(tmp, "dib-first", "install-types")))
		must(os.WriteFile(filepath.Join(tmp, ".complete"), nil, 0o644))
		if err := os.Rename(tmp, dir); err != nil && !errors.Is(err, fs.ErrExist) && !errors.Is(err, syscall.ENOTEMPTY) {
			t.Fatal(err)
		}
	}
	f := &compatFixture{dir: dir, home: filepath.Join(dir, "home"), first: filepath.Join(dir, "dib-first")}
	f.env = []string{
		"HOME=" + f.home,
		"ELEMENTS_PATH=" + f.first + ":" + filepath.Join(repo, "ci/e2e/elements"),
		"DIB_CONTRACTS_USER=trove",
		"DIB_REPOLOCATION_dib_contracts_repo=" + filepath.Join(dir, "repo"),
		"DIB_REPOLOCATION_dib_contracts_file=file://" + filepath.Join(dir, "file.txt"),
		"DIB_DEV_USER_PWDLESS_SUDO=yes",
		"DIB_DEV_USER_AUTHORIZED_KEYS=" + filepath.Join(dir, "devuser-keys"),
		"DIB_MODPROBE_BLACKLIST=floppy",
		"DIB_CLOUD_INIT_DATASOURCES=ConfigDrive", // cloud-init-nocloud sets NoCloud over it
		"DIB_APT_CONF=" + filepath.Join(dir, "apt.conf"),
		"DIB_APT_SOURCES=" + filepath.Join(dir, "sources.list"),
		"DIB_DPKG_MANIFEST=" + filepath.Join(dir, "dpkg-manifest.json"),
		"DIB_INSTALLTYPE_pip_and_virtualenv=package",
		// DIB's dib-python picks Python 2 for Debian unless told.
		"DIB_PYTHON_VERSION=3",
	}
	return f
}

// dibCreate runs bin/disk-image-create (a link to strata) with args.
func dibCreate(t *testing.T, env []string, args ...string) (string, error) {
	t.Helper()
	link := filepath.Join(repo, "bin", "disk-image-create")
	if _, err := os.Lstat(link); err != nil {
		if err := os.Symlink("strata", link); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(link, args...)
	cmd.Dir = repo
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func TestDIBElementsAndDiskImageCreateCommandLinesRunUnchanged(t *testing.T) {
	// Light (one VM at most): runs beside the other light tests, after
	// the heavy ones (the package comment says why).
	t.Parallel()
	in, ok := dib.Find()
	if !ok {
		t.Fatal("diskimage-builder is not installed: ci/deps.sh dib installs Debian's python3-diskimage-builder (make test does)")
	}
	table := compatTable()
	checkTableCoversDIB(t, in, table)
	checkDocsAgree(t, table)
	fx := newCompatFixture(t, in)
	out := t.TempDir()
	// Every element of a build is named on the command line, strata's own
	// stand-ins too (base, pkg-map...), as a DIB user's script names them.
	elementsOf := func(image string) []string {
		var names []string
		for n, r := range table {
			if r.image == image && (r.status == works || r.status == ownElement) && n != "vm" && n != "growroot" && n != "debian-minimal" {
				names = append(names, n)
			}
		}
		sort.Strings(names)
		return names
	}

	t.Run("refusals", func(t *testing.T) {
		for name, r := range table {
			if r.status != refused {
				continue
			}
			start := time.Now()
			log, err := dibCreate(t, fx.env, "--image-cache", cache, "-o", filepath.Join(out, "refused"), "-t", "tar", "debian-minimal", name)
			if err == nil || !strings.Contains(log, r.refusal) {
				t.Errorf("%s: %v, want a refusal saying %q:\n%s", name, err, r.refusal, tail(log, 20))
				continue
			}
			if time.Since(start) > 30*time.Second || strings.Contains(log, "==> root.d") {
				t.Errorf("%s: refused only after hooks ran:\n%s", name, tail(log, 20))
			}
		}
	})

	t.Run("A", func(t *testing.T) {
		// dib-compat-run's nonce: A restarts from the cached tree before
		// its hook (after pip-cache's root.d mount, which the restart makes
		// again), unless nothing is cached yet.
		run := nonce(t)
		if err := os.Remove(filepath.Join(cache, "pip", "dib-compat-run")); err != nil && !errors.Is(err, fs.ErrNotExist) {
			t.Fatal(err)
		}
		start := time.Now()
		img := filepath.Join(out, "A")
		args := append([]string{"-a", "amd64", "--image-cache", cache, "-o", img, "-t", "tar,qcow2", "--checksum", "debian-minimal", "dib-contracts", "dib-compat-run"}, elementsOf("A")...)
		log, err := dibCreate(t, append(append([]string{}, fx.env...), "COMPAT_RUN="+run), args...)
		t.Logf("disk-image-create %s: %.0f s\n%s", strings.Join(args, " "), time.Since(start).Seconds(), tail(log, 40))
		if err != nil {
			t.Fatal(err)
		}
		it := readImageTree(t, img+".tar")
		it.run = run
		if it.manifest.CachedFrom != "" {
			t.Logf("A restarted after the cached tree of %s", it.manifest.CachedFrom)
		}
		checkRows(t, table, "A", it)
		checkContracts(t, it)
	})

	// make test builds A only: it shares the Debian 12 base system every
	// other end-to-end build caches, and needs no boot. A2 (minutes of
	// dpkg), B (a second base system, Debian 13, and a UEFI boot under TCG)
	// and C are the expensive part: make e2e-all (every datastore) builds
	// them.
	all := os.Getenv("STRATA_E2E_DATASTORES") == "all"
	if all {
		t.Run("A2", func(t *testing.T) {
			start := time.Now()
			img := filepath.Join(out, "A2")
			args := append([]string{"-a", "amd64", "--image-cache", cache, "-o", img, "-t", "tar", "debian-minimal"}, elementsOf("A2")...)
			log, err := dibCreate(t, fx.env, args...)
			t.Logf("disk-image-create %s: %.0f s\n%s", strings.Join(args, " "), time.Since(start).Seconds(), tail(log, 20))
			if err != nil {
				t.Fatal(err)
			}
			checkRows(t, table, "A2", readImageTree(t, img+".tar"))
		})
	} else {
		t.Logf("A2 (%s: package-only elements) is built by make e2e-all", strings.Join(elementsOf("A2"), " "))
	}

	if !all {
		t.Logf("B (disk-image-create with DIB's flags, vm block-device-efi on Debian 13, booted under UEFI), C (vm debian-minimal on Debian 13 from B's cached base) and D (ELEMENTS_PATH set to DIB's tree, vm block-device-mbr debian-minimal, booted under BIOS) are built by make e2e-all")
		return
	}
	bPassed := t.Run("B", func(t *testing.T) {
		start := time.Now()
		img := filepath.Join(out, "B")
		agent := agentBinary(t)
		env := append(append([]string{}, fx.env...), "DIB_RELEASE=trixie", "DIB_STRATA_AGENT_BINARY="+agent, "DIB_MODPROBE_BLACKLIST=pcspkr",
			// iscsi-boot's environment.d file reads DISTRO_NAME before any
			// element sets it (as under disk-image-create): give it.
			"DISTRO_NAME=debian")
		args := append([]string{"-a", "amd64", "--image-cache", cache, "-o", img, "-t", "qcow2,tar", "--checksum", "--root-label", "dib-root",
			"--image-extra-size", "0.5", "--mkfs-options", "-m 1", "--mkfs-journal-size", "32", "--no-tmpfs", "--min-tmpfs", "3",
			"--install-type", "source", "--logfile", img + ".dib.log", "-x",
			"vm", "block-device-efi", "debian-minimal", "redis", "strata-agent", "config-drive", "growroot"}, elementsOf("B")...)
		log, err := dibCreate(t, env, args...)
		dibLog, _ := os.ReadFile(img + ".dib.log")
		t.Logf("disk-image-create %s: %.0f s (terminal: %d bytes, --logfile: %d bytes)\n%s", strings.Join(args, " "),
			time.Since(start).Seconds(), len(log), len(dibLog), tail(string(dibLog), 40))
		if err != nil {
			t.Fatalf("%v\n%s", err, tail(log, 40))
		}
		if strings.Contains(log, "PROFILING") || !strings.Contains(string(dibLog), "PROFILING") {
			t.Errorf("--logfile: the output went to the terminal (%d bytes) rather than only to the log", len(log))
		}
		if !strings.Contains(string(dibLog), "+ set -o pipefail") {
			t.Error("-x did not trace the hooks")
		}
		for _, f := range []string{"B.qcow2.md5", "B.qcow2.sha256", "B.tar.md5"} {
			if _, err := os.Stat(filepath.Join(out, f)); err != nil {
				t.Errorf("--checksum: %v", err)
			}
		}
		it := readImageTree(t, img+".tar")
		checkRows(t, table, "B", it)
		for _, want := range []string{"redis-server", "linux-image-cloud-amd64"} {
			if it.packages[want] == "" {
				t.Errorf("the Debian 13 datastore image lacks %s", want)
			}
		}
		if !strings.Contains(it.files["usr/lib/os-release"], "trixie") {
			t.Errorf("B is not Debian 13: %s", it.files["usr/lib/os-release"])
		}
		checkDisk(t, img+".qcow2", "dib-root")
		res, err := boottest.Serial(context.Background(), boottest.Options{
			Image: img + ".qcow2", Firmware: qemu.UEFI, Timeout: 12 * time.Minute, WorkDir: out,
		}, regexp.MustCompile(`login: `))
		if err != nil {
			t.Fatalf("booting B under UEFI: %v", err)
		}
		t.Logf("B booted under UEFI to a login prompt after %.0f s (%s)", res.Seconds, res.Accel)
	})

	t.Run("C", func(t *testing.T) {
		start := time.Now()
		img := filepath.Join(out, "C")
		run(t, []string{"DIB_RELEASE=trixie"}, "build", "-f", "images/debian-minimal.yaml", "-o", img, "-t", "qcow2", "--image-cache", cache)
		m, err := manifest.Read(img + ".manifest.json")
		if err != nil {
			t.Fatal(err)
		}
		if m.Inputs.Env["DIB_RELEASE"] != "trixie" {
			t.Errorf("manifest release = %q", m.Inputs.Env["DIB_RELEASE"])
		}
		// B built the same Debian 13 base with a dozen more elements, several
		// with environment.d files of their own: none of them is something
		// root.d can see, so C starts from B's cached root filesystem.
		for _, h := range m.Hooks {
			if h.Phase == "root.d" && bPassed && h.Status != "cached" {
				t.Errorf("root.d/%s ran again (%s) although B cached the same base system", h.Name, h.Status)
			}
		}
		t.Logf("vm debian-minimal on Debian 13: %.0f s", time.Since(start).Seconds())
	})

	// D: ELEMENTS_PATH names DIB's whole element tree, as a DIB user's
	// script does, with DIB's MBR block-device layout. strata's vm and
	// debian-minimal stand in for DIB's (its tree is searched last), the
	// layout is mapped onto strata's loopless disk, and the image boots
	// under BIOS, as an MBR disk does.
	t.Run("D", func(t *testing.T) {
		start := time.Now()
		img := filepath.Join(out, "D")
		env := []string{"ELEMENTS_PATH=" + in.Elements}
		args := []string{"-a", "amd64", "--image-cache", cache, "-o", img, "-t", "qcow2", "vm", "block-device-mbr", "debian-minimal"}
		log, err := dibCreate(t, env, args...)
		t.Logf("ELEMENTS_PATH=%s disk-image-create %s: %.0f s\n%s", in.Elements, strings.Join(args, " "), time.Since(start).Seconds(), tail(log, 30))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(log, "block-device configuration: the mbr partition table is written as GPT with a protective MBR") {
			t.Error("the log does not say how DIB's MBR layout was mapped")
		}
		m, err := manifest.Read(img + ".manifest.json")
		if err != nil {
			t.Fatal(err)
		}
		paths := map[string]string{}
		for _, e := range m.Elements {
			paths[e.Name] = e.Path
		}
		for name, under := range map[string]string{"vm": filepath.Join(repo, "elements"), "debian-minimal": filepath.Join(repo, "elements"), "block-device-mbr": in.Elements} {
			if !strings.HasPrefix(paths[name], under+"/") {
				t.Errorf("element %s came from %q, want %s", name, paths[name], under)
			}
		}
		checkDisk(t, img+".qcow2", "cloudimg-rootfs")
		res, err := boottest.Serial(context.Background(), boottest.Options{
			Image: img + ".qcow2", Firmware: qemu.BIOS, Timeout: 12 * time.Minute, WorkDir: out,
		}, regexp.MustCompile(`login: `))
		if err != nil {
			t.Fatalf("booting D under BIOS: %v", err)
		}
		t.Logf("D: built and booted in %.0f s, at a login prompt %.0f s after the boot started under BIOS (%s)", time.Since(start).Seconds(), res.Seconds, res.Accel)
	})
}

func checkRows(t *testing.T, table map[string]compatRow, image string, it *imageTree) {
	t.Helper()
	for name, r := range table {
		if r.image != image || r.check == nil {
			continue
		}
		if err := r.check(it); err != nil {
			t.Errorf("element %s (%s): %v", name, r.status, err)
		}
	}
}

// checkContracts: what the dib-contracts element (Trove's contracts) left.
func checkContracts(t *testing.T, it *imageTree) {
	t.Helper()
	for path, want := range map[string]string{
		"etc/dib-contracts/installed-from": "source\n",
		"etc/dib-contracts/left":           "left by extra-data.d for trove\n",
		"etc/dib-contracts/environment":    "trove strict systemd\n",
		"etc/dib-contracts/hello":          "hello from dib-contracts\n",
		"etc/dib-contracts/from-scriptdir": "read through $(dirname $0) of a linked hook\n",
	} {
		if got, ok := it.files[path]; !ok || got != want {
			t.Errorf("/%s = %q (present %v), want %q", path, got, ok, want)
		}
	}
	if it.packages["dib-contracts-packaged"] != "" {
		t.Error("a package-installs entry for the package install type was installed")
	}
	if it.packages["file"] == "" {
		t.Error("install-packages called by a hook did not install file")
	}
}

// checkDisk reads the partition table and the root filesystem's label.
func checkDisk(t *testing.T, qcow, label string) {
	t.Helper()
	raw := qcow + ".raw"
	defer os.Remove(raw)
	if out, err := exec.Command("qemu-img", "convert", "-O", "raw", qcow, raw).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img convert: %v\n%s", err, out)
	}
	out, err := exec.Command("sfdisk", "--json", raw).Output()
	if err != nil {
		t.Fatalf("sfdisk: %v", err)
	}
	var pt struct {
		PartitionTable struct {
			Label      string `json:"label"`
			Partitions []struct {
				Start int64  `json:"start"`
				Type  string `json:"type"`
			} `json:"partitions"`
		} `json:"partitiontable"`
	}
	if err := json.Unmarshal(out, &pt); err != nil {
		t.Fatal(err)
	}
	p := pt.PartitionTable
	if p.Label != "gpt" || len(p.Partitions) != 3 || p.Partitions[1].Type != "C12A7328-F81F-11D2-BA4B-00A0C93EC93B" {
		t.Fatalf("partition table: %s", out)
	}
	got, err := exec.Command("blkid", "-p", "-O", fmt.Sprint(p.Partitions[2].Start*512), "-s", "LABEL", "-o", "value", raw).Output()
	if err != nil || strings.TrimSpace(string(got)) != label {
		t.Errorf("root filesystem label = %q (%v), want %q (--root-label)", got, err, label)
	}
}

func agentBinary(t *testing.T) string {
	agent := filepath.Join(repo, "bin", "strata-agent")
	if _, err := os.Stat(agent); err != nil {
		build := exec.Command("go", "build", "-o", agent, "./agent/cmd/strata-agent")
		build.Dir, build.Env = repo, append(os.Environ(), "CGO_ENABLED=0")
		if o, err := build.CombinedOutput(); err != nil {
			t.Fatalf("building strata-agent: %v\n%s", err, o)
		}
	}
	return agent
}

// checkTableCoversDIB: every element of the installed DIB has a row, and
// every row an element.
func checkTableCoversDIB(t *testing.T, in *dib.Install, table map[string]compatRow) {
	t.Helper()
	entries, err := os.ReadDir(in.Elements)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, e := range entries {
		if !e.IsDir() || strings.HasPrefix(e.Name(), "__") {
			continue
		}
		seen[e.Name()] = true
		if _, ok := table[e.Name()]; !ok {
			t.Errorf("DIB %s has element %s, which the compatibility table does not list", in.Version, e.Name())
		}
	}
	for n := range table {
		if !seen[n] {
			t.Errorf("the compatibility table lists %s, which DIB %s does not have", n, in.Version)
		}
	}
}

// checkDocsAgree: docs/dib-compat.md has the same status for every
// element as the table the suite checks.
func checkDocsAgree(t *testing.T, table map[string]compatRow) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repo, "docs/dib-compat.md"))
	if err != nil {
		t.Fatal(err)
	}
	row := regexp.MustCompile("(?m)^\\| `([a-z0-9-]+)` \\| ([^|]+?) \\|")
	doc := map[string]string{}
	_, elements, ok := strings.Cut(string(b), "\n## The elements\n")
	if !ok {
		t.Fatal(`docs/dib-compat.md has no "## The elements" section`)
	}
	for _, m := range row.FindAllStringSubmatch(elements, -1) {
		doc[m[1]] = strings.TrimSpace(m[2])
	}
	for n, r := range table {
		if got := doc[n]; got != string(r.status) {
			t.Errorf("docs/dib-compat.md says %s: %q, the suite %q", n, got, r.status)
		}
	}
	for n := range doc {
		if _, ok := table[n]; !ok {
			t.Errorf("docs/dib-compat.md lists %s, which the suite does not", n)
		}
	}
}
