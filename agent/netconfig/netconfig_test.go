package netconfig

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// novaStatic is the shape Nova 26 writes for a port on a subnet with DHCP
// off (the compute tier's strata-flat network), plus a second port on a
// DHCP subnet.
const novaStatic = `{
 "links": [
  {"id": "tap1a81968a-79", "vif_id": "1a81968a-797a-400f-8a80-567f997eb93f", "type": "bridge", "mtu": 1450, "ethernet_mac_address": "fa:16:3e:12:34:56"},
  {"id": "tap22222222-22", "vif_id": "22222222-2222-2222-2222-222222222222", "type": "bridge", "mtu": null, "ethernet_mac_address": "FA:16:3E:AB:CD:EF"}
 ],
 "networks": [
  {"id": "network0", "type": "ipv4", "link": "tap1a81968a-79", "ip_address": "10.213.7.23", "netmask": "255.255.255.0",
   "routes": [{"network": "0.0.0.0", "netmask": "0.0.0.0", "gateway": "10.213.7.1"}, {"network": "192.168.0.0", "netmask": "255.255.0.0", "gateway": "10.213.7.254"}],
   "network_id": "5f1e0c6c-0000-4000-8000-000000000001", "services": [{"type": "dns", "address": "10.213.7.2"}]},
  {"id": "network1", "type": "ipv6", "link": "tap1a81968a-79", "ip_address": "fd00:7::17", "netmask": "ffff:ffff:ffff:ffff::",
   "routes": [{"network": "::", "netmask": "::", "gateway": "fd00:7::1"}], "network_id": "5f1e0c6c-0000-4000-8000-000000000001"},
  {"id": "network2", "type": "ipv4_dhcp", "link": "tap22222222-22", "network_id": "5f1e0c6c-0000-4000-8000-000000000002"}
 ],
 "services": [{"type": "dns", "address": "192.0.2.53"}, {"type": "ntp", "address": "192.0.2.123"}]
}`

func TestParseNovaNetworkData(t *testing.T) {
	ifcs, skipped, err := Parse([]byte(novaStatic))
	if err != nil {
		t.Fatal(err)
	}
	if len(skipped) != 0 {
		t.Errorf("skipped %v", skipped)
	}
	if len(ifcs) != 2 {
		t.Fatalf("%d interfaces, want 2: %+v", len(ifcs), ifcs)
	}
	first := ifcs[0].Unit()
	for _, want := range []string{
		"[Match]\nType=ether\nMACAddress=fa:16:3e:12:34:56\n",
		"[Link]\nMTUBytes=1450\n",
		"DHCP=no\n", "IPv6AcceptRA=no\n",
		"Address=10.213.7.23/24\n", "Address=fd00:7::17/64\n",
		"DNS=10.213.7.2\nDNS=192.0.2.53\n",
		"[Route]\nGateway=10.213.7.1\n",
		"[Route]\nDestination=192.168.0.0/16\nGateway=10.213.7.254\n",
		"[Route]\nGateway=fd00:7::1\n",
	} {
		if !strings.Contains(first, want) {
			t.Errorf("unit for the static link lacks %q:\n%s", want, first)
		}
	}
	if strings.Contains(first, "192.0.2.123") {
		t.Errorf("an ntp service became a DNS server:\n%s", first)
	}
	second := ifcs[1].Unit()
	for _, want := range []string{"MACAddress=fa:16:3e:ab:cd:ef\n", "DHCP=ipv4\n", "[DHCPv4]\nUseDomains=yes\n"} {
		if !strings.Contains(second, want) {
			t.Errorf("unit for the DHCP link lacks %q:\n%s", want, second)
		}
	}
	if strings.Contains(second, "MTUBytes") || strings.Contains(second, "\nAddress=") || strings.Contains(second, "\nDNS=") {
		t.Errorf("the DHCP link got static settings:\n%s", second)
	}
	if got := ifcs[0].FileName(); got != "10-strata-netdata-fa163e123456.network" || got >= "80-strata-dhcp.network" {
		t.Errorf("file name %q must sort before the image's 80-strata-dhcp.network", got)
	}
}

func TestParseLeavesUnknownKindsToDHCP(t *testing.T) {
	in := `{"links": [
	  {"id": "eth0", "type": "phy", "ethernet_mac_address": "fa:16:3e:00:00:01"},
	  {"id": "vlan0", "type": "vlan", "vlan_link": "eth0", "vlan_id": 101, "vlan_mac_address": "fa:16:3e:00:00:01"},
	  {"id": "eth1", "type": "phy", "ethernet_mac_address": "fa:16:3e:00:00:02"}],
	 "networks": [
	  {"id": "n0", "type": "ipv4", "link": "vlan0", "ip_address": "10.0.0.5", "netmask": "255.255.255.0"},
	  {"id": "n1", "type": "ipv7", "link": "eth1"},
	  {"id": "n2", "type": "ipv6_slaac", "link": "eth0"}]}`
	ifcs, skipped, err := Parse([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	if len(ifcs) != 1 || ifcs[0].Link != "eth0" || !ifcs[0].AcceptRA || len(ifcs[0].Addresses) != 0 {
		t.Fatalf("interfaces %+v, want eth0 alone with router advertisements", ifcs)
	}
	var what []string
	for _, s := range skipped {
		what = append(what, s.What+": "+s.Why)
	}
	for _, want := range []string{`links[1] ("vlan0")`, `networks[0] ("n0")`, `networks[1] ("n1"): network type "ipv7"`} {
		if !slices.ContainsFunc(what, func(s string) bool { return strings.Contains(s, want) }) {
			t.Errorf("skipped %q lacks %s", what, want)
		}
	}
}

// Every value is parsed as what it is; text that would add a directive
// to a unit (a newline, a zone) is refused with the field named.
func TestParseRefusesBadValues(t *testing.T) {
	link := `{"id": "l0", "type": "bridge", "ethernet_mac_address": "fa:16:3e:00:00:01"}`
	net4 := func(extra string) string {
		return `{"links": [` + link + `], "networks": [{"id": "n0", "type": "ipv4", "link": "l0", "ip_address": "10.0.0.5", "netmask": "255.255.255.0"` + extra + `}]}`
	}
	for _, tc := range []struct{ name, in, want string }{
		{"not JSON", `{"links": [`, "not valid JSON"},
		{"newline in address", `{"links": [` + link + `], "networks": [{"id": "n0", "type": "ipv4", "link": "l0", "ip_address": "10.0.0.5\nDNS=6.6.6.6", "netmask": "24"}]}`, `networks[0] ("n0"): ip_address`},
		{"newline in MAC", `{"links": [{"id": "l0", "type": "bridge", "ethernet_mac_address": "fa:16:3e:00:00:01\n[Network]"}]}`, `links[0] ("l0"): ethernet_mac_address`},
		{"long MAC", `{"links": [{"id": "l0", "type": "bridge", "ethernet_mac_address": "00:00:00:00:fe:80:00:00:00:00:00:00:02:00:5e:10:00:00:00:01"}]}`, "not an Ethernet MAC"},
		{"MTU text", `{"links": [{"id": "l0", "type": "bridge", "mtu": "1500\n", "ethernet_mac_address": "fa:16:3e:00:00:01"}]}`, "mtu"},
		{"MTU out of range", `{"links": [{"id": "l0", "type": "bridge", "mtu": 10, "ethernet_mac_address": "fa:16:3e:00:00:01"}]}`, "mtu: 10 is not a number from 68"},
		{"zone", net4(`, "routes": [{"network": "0.0.0.0", "netmask": "0.0.0.0", "gateway": "fe80::1%eth0"}]`), "routes[0]: gateway"},
		{"v6 address on ipv4", `{"links": [` + link + `], "networks": [{"id": "n0", "type": "ipv4", "link": "l0", "ip_address": "fd00::5", "netmask": "64"}]}`, "not an IPv4 address"},
		{"hole in mask", `{"links": [` + link + `], "networks": [{"id": "n0", "type": "ipv4", "link": "l0", "ip_address": "10.0.0.5", "netmask": "255.0.255.0"}]}`, "not contiguous"},
		{"prefix too long", `{"links": [` + link + `], "networks": [{"id": "n0", "type": "ipv4", "link": "l0", "ip_address": "10.0.0.5", "netmask": "33"}]}`, "/33 is out of range"},
		{"route host bits", net4(`, "routes": [{"network": "10.1.2.3", "netmask": "255.255.0.0", "gateway": "10.0.0.1"}]`), "host bits"},
		{"dns text", net4(`, "services": [{"type": "dns", "address": "ns.example"}]`), `services[0] (dns)`},
		{"unknown link", `{"links": [` + link + `], "networks": [{"id": "n0", "type": "ipv4_dhcp", "link": "l9"}]}`, `link "l9" is not in links`},
		{"link id twice", `{"links": [` + link + `,` + link + `]}`, "id used twice"},
		{"MAC twice", `{"links": [` + link + `, {"id": "l1", "type": "bridge", "ethernet_mac_address": "FA:16:3E:00:00:01"}]}`, `also link "l0"'s`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := Parse([]byte(tc.in))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one containing %q", err, tc.want)
			}
		})
	}
}

func writeData(t *testing.T, drive, content string) {
	t.Helper()
	p := filepath.Join(drive, DataPath)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func names(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		out = append(out, e.Name())
	}
	return out
}

func TestWriteReplacesItsOwnUnitsOnly(t *testing.T) {
	drive, dir := t.TempDir(), filepath.Join(t.TempDir(), "network")
	// Without network_data.json nothing is written, and no directory made.
	res, err := Write(drive, dir)
	if err != nil || res.Found || len(res.Written) != 0 {
		t.Fatalf("no data: %+v, %v", res, err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("directory made without data: %v", err)
	}
	writeData(t, drive, novaStatic)
	res, err = Write(drive, dir)
	if err != nil || !res.Found || len(res.Written) != 2 {
		t.Fatalf("%+v, %v", res, err)
	}
	unit, err := os.ReadFile(filepath.Join(dir, "10-strata-netdata-fa163e123456.network"))
	if err != nil || !strings.Contains(string(unit), "Address=10.213.7.23/24") {
		t.Fatalf("unit %q, %v", unit, err)
	}
	// Someone else's unit and a stale one of ours.
	if err := os.WriteFile(filepath.Join(dir, "50-operator.network"), []byte("[Match]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, Prefix+"020000000001.network"), []byte("[Match]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Write(drive, dir); err != nil {
		t.Fatal(err)
	}
	want := []string{"10-strata-netdata-fa163e123456.network", "10-strata-netdata-fa163eabcdef.network", "50-operator.network"}
	if got := names(t, dir); !slices.Equal(got, want) {
		t.Errorf("after a rewrite %v, want %v", got, want)
	}
	// A bad file changes nothing: the units of the last good one stay.
	writeData(t, drive, `{"links": [{"id": "l0", "ethernet_mac_address": "x"}]}`)
	if _, err := Write(drive, dir); err == nil || !strings.Contains(err.Error(), DataPath) {
		t.Fatalf("bad data: err = %v, want one naming %s", err, DataPath)
	}
	if got := names(t, dir); !slices.Equal(got, want) {
		t.Errorf("after bad data %v, want %v", got, want)
	}
	// The drive no longer has the file: our units go, the operator's stays.
	if err := os.Remove(filepath.Join(drive, DataPath)); err != nil {
		t.Fatal(err)
	}
	if _, err := Write(drive, dir); err != nil {
		t.Fatal(err)
	}
	if got := names(t, dir); !slices.Equal(got, []string{"50-operator.network"}) {
		t.Errorf("without data %v", got)
	}
}

func TestWriteRefusesAnOversizedFile(t *testing.T) {
	drive := t.TempDir()
	writeData(t, drive, `{"links": [], "x": "`+strings.Repeat("a", maxData)+`"}`)
	if _, err := Write(drive, t.TempDir()); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Fatalf("err = %v", err)
	}
}
