package disk

import (
	"strings"
	"testing"
)

func TestPlanLayoutBootable(t *testing.T) {
	ids := DeriveIDs([]byte("layout"))
	l, err := PlanLayout(2*gib-1000, true, ids) // rounds up to 2 GiB
	if err != nil {
		t.Fatal(err)
	}
	if l.Size != 2*gib {
		t.Fatalf("size %d, want 2 GiB", l.Size)
	}
	want := []struct {
		num         int
		name        string
		ty, guid    UUID
		first, last uint64
	}{
		{1, "BSP", TypeBIOSBoot, ids.BIOSBootPart, 2048, 4095},
		{2, "ESP", TypeESP, ids.ESPPart, 4096, 4096 + 131072 - 1},
		{3, "root", TypeLinuxData, ids.RootPart, 135168, 4194304 - 34},
	}
	if len(l.Partitions) != len(want) {
		t.Fatalf("%d partitions", len(l.Partitions))
	}
	for i, w := range want {
		p := l.Partitions[i]
		if p.Number != w.num || p.Name != w.name || p.Type != w.ty || p.GUID != w.guid || p.FirstLBA != w.first || p.LastLBA != w.last {
			t.Errorf("partition %d = %+v, want %+v", i+1, p, w)
		}
		if p.FirstLBA%2048 != 0 {
			t.Errorf("partition %d not 1 MiB aligned", i+1)
		}
	}
	if l.ESP != (Extent{Offset: 4096 * 512, Size: 64 * mib}) {
		t.Errorf("ESP extent %+v", l.ESP)
	}
	rootPartBytes := int64(4194304-34-135168+1) * 512
	if l.Root.Offset != 135168*512 || l.Root.Size != rootPartBytes/4096*4096 || l.Root.Size%4096 != 0 {
		t.Errorf("root extent %+v (partition %d bytes)", l.Root, rootPartBytes)
	}
	if rp, ok := l.RootPartition(); !ok || rp.Number != 3 {
		t.Errorf("RootPartition = %+v, %v", rp, ok)
	}
}

func TestPlanLayoutBare(t *testing.T) {
	l, err := PlanLayout(100*mib+1, false, IDs{})
	if err != nil {
		t.Fatal(err)
	}
	if l.Partitions != nil || l.Root != (Extent{0, 101 * mib}) || l.Size != 101*mib || l.ESP != (Extent{}) {
		t.Errorf("bare layout %+v", l)
	}
	if _, ok := l.RootPartition(); ok {
		t.Error("bare layout has a root partition")
	}
}

func TestPlanLayoutTooSmall(t *testing.T) {
	if _, err := PlanLayout(80*mib, true, DeriveIDs(nil)); err == nil || !strings.Contains(err.Error(), "root partition") {
		t.Errorf("80 MiB bootable: err = %v", err)
	}
	if _, err := PlanLayout(8*mib, false, IDs{}); err == nil {
		t.Error("8 MiB bare filesystem accepted")
	}
	if _, err := PlanLayout(0, false, IDs{}); err == nil {
		t.Error("size 0 accepted")
	}
}

func TestAutoSize(t *testing.T) {
	for _, tc := range []struct {
		u        TreeUsage
		bootable bool
		want     int64
	}{
		{TreeUsage{Bytes: 10 * mib, Inodes: 100}, true, 2 * gib},                        // minimum
		{TreeUsage{Bytes: 10 * mib, Inodes: 100}, false, 2 * gib},                       // minimum
		{TreeUsage{Bytes: 1536 * mib, Inodes: 40000}, false, 2304 * mib},                // 2048+256
		{TreeUsage{Bytes: 1536 * mib, Inodes: 40000}, true, 2371 * mib},                 // + 67 MiB
		{TreeUsage{Bytes: 1 * mib, Inodes: 100000}, false, roundUp(100000*32<<10, mib)}, // inode-bound
		{TreeUsage{Bytes: 3*gib + 1, Inodes: 1}, false, roundUp((3*gib+1)*4/3+256*mib, mib)},
	} {
		if got := AutoSize(tc.u, tc.bootable); got != tc.want {
			t.Errorf("AutoSize(%+v, %v) = %d MiB, want %d MiB", tc.u, tc.bootable, got/mib, tc.want/mib)
		}
	}
}
