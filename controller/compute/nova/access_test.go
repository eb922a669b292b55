package nova

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"

	th "github.com/gophercloud/gophercloud/v2/testhelper"

	"strata/controller/compute"
)

// ruleStore is Neutron's security-group-rules API over one group, with
// the fields Neutron 21 answers (secgroup_rule_created.json) and an
// optional failure on the n-th create.
type ruleStore struct {
	mu       sync.Mutex
	rules    map[string]map[string]any
	next     int
	calls    []string
	failPost int // the n-th POST answers 500 (0: none)
	posts    int
}

func newRuleStore(t *testing.T) (*ruleStore, *Driver) {
	s := &ruleStore{rules: map[string]map[string]any{}}
	fs := th.SetupHTTP()
	t.Cleanup(fs.Teardown)
	fs.Mux.HandleFunc("GET /network/v2.0/security-group-rules", func(w http.ResponseWriter, r *http.Request) {
		th.TestFormValues(t, r, map[string]string{"security_group_id": sgID, "direction": "ingress"})
		s.mu.Lock()
		defer s.mu.Unlock()
		s.calls = append(s.calls, "GET")
		list := []map[string]any{}
		ids := make([]string, 0, len(s.rules))
		for id := range s.rules {
			ids = append(ids, id)
		}
		sort.Strings(ids)
		for _, id := range ids {
			list = append(list, s.rules[id])
		}
		// An egress rule Neutron adds to every group is not listed:
		// the driver asks for ingress only.
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"security_group_rules": list})
	})
	fs.Mux.HandleFunc("POST /network/v2.0/security-group-rules", func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			Rule map[string]any `json:"security_group_rule"`
		}
		json.NewDecoder(r.Body).Decode(&body)
		s.mu.Lock()
		defer s.mu.Unlock()
		s.posts++
		if s.posts == s.failPost {
			s.calls = append(s.calls, "POST failed")
			w.WriteHeader(500)
			return
		}
		s.next++
		rule := map[string]any{"id": fmt.Sprintf("rule-%02d", s.next), "direction": body.Rule["direction"], "ethertype": body.Rule["ethertype"],
			"protocol": body.Rule["protocol"], "port_range_min": body.Rule["port_range_min"], "port_range_max": body.Rule["port_range_max"],
			"remote_ip_prefix": body.Rule["remote_ip_prefix"], "remote_group_id": nil, "security_group_id": body.Rule["security_group_id"]}
		s.rules[rule["id"].(string)] = rule
		s.calls = append(s.calls, fmt.Sprintf("POST %s %v %v", body.Rule["ethertype"], body.Rule["port_range_min"], body.Rule["remote_ip_prefix"]))
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(201)
		json.NewEncoder(w).Encode(map[string]any{"security_group_rule": rule})
	})
	fs.Mux.HandleFunc("DELETE /network/v2.0/security-group-rules/{id}", func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		defer s.mu.Unlock()
		id := r.PathValue("id")
		rule, ok := s.rules[id]
		if !ok {
			w.WriteHeader(404)
			return
		}
		delete(s.rules, id)
		s.calls = append(s.calls, fmt.Sprintf("DELETE %s %v %v", rule["ethertype"], rule["port_range_min"], rule["remote_ip_prefix"]))
		w.WriteHeader(204)
	})
	return s, fakeDriver(t, fs)
}

// add puts a rule in the group as CreateServer or an operator made it.
func (s *ruleStore) add(etherType string, port int, prefix any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.next++
	id := fmt.Sprintf("rule-%02d", s.next)
	s.rules[id] = map[string]any{"id": id, "direction": "ingress", "ethertype": etherType, "protocol": "tcp", "port_range_min": port,
		"port_range_max": port, "remote_ip_prefix": prefix, "remote_group_id": nil, "security_group_id": sgID}
}

// state is the group's rules as "IPv4 3306 10.0.0.0/8" lines, sorted.
func (s *ruleStore) state() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, r := range s.rules {
		p, _ := r["remote_ip_prefix"].(string)
		if p == "" {
			p = "anywhere"
		}
		out = append(out, fmt.Sprintf("%s %v %s", r["ethertype"], r["port_range_min"], p))
	}
	sort.Strings(out)
	return out
}

func (s *ruleStore) takeCalls() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := s.calls
	s.calls = nil
	return out
}

var published = compute.Server{ID: serverID, Refs: map[string]string{refSecurityGroup: sgID}}

// allowed_cidrs become the group's rules: narrowing deletes the open
// rules before adding the limited ones, widening back reopens IPv4 and
// IPv6, and a call that changes nothing sends no write.
func TestPublishSetsTheSecurityGroupRules(t *testing.T) {
	s, d := newRuleStore(t)
	ctx := context.Background()
	s.add("IPv4", 3306, nil)
	s.add("IPv6", 3306, nil)
	if _, err := d.Publish(ctx, published, []int{3306}, compute.Access{AllowedCIDRs: []string{"10.0.0.0/8", "192.0.2.7/32"}}); err != nil {
		t.Fatal(err)
	}
	if got, want := s.state(), []string{"IPv4 3306 10.0.0.0/8", "IPv4 3306 192.0.2.7/32"}; !slices.Equal(got, want) {
		t.Errorf("after narrowing: %v, want %v", got, want)
	}
	calls := s.takeCalls()
	firstPost := slices.IndexFunc(calls, func(c string) bool { return strings.HasPrefix(c, "POST") })
	lastDelete := -1
	for i, c := range calls {
		if strings.HasPrefix(c, "DELETE") {
			lastDelete = i
		}
	}
	if firstPost < 0 || lastDelete < 0 || lastDelete > firstPost {
		t.Errorf("calls %v: the open rules must go before the limited ones are added", calls)
	}
	// The same access again: read, nothing written.
	if _, err := d.Publish(ctx, published, []int{3306}, compute.Access{AllowedCIDRs: []string{"192.0.2.7/32", "10.0.0.0/8"}}); err != nil {
		t.Fatal(err)
	}
	if calls := s.takeCalls(); !slices.Equal(calls, []string{"GET"}) {
		t.Errorf("an unchanged access made calls %v", calls)
	}
	// One block dropped, one kept.
	if _, err := d.Publish(ctx, published, []int{3306}, compute.Access{AllowedCIDRs: []string{"10.0.0.0/8"}}); err != nil {
		t.Fatal(err)
	}
	if got, want := s.state(), []string{"IPv4 3306 10.0.0.0/8"}; !slices.Equal(got, want) {
		t.Errorf("after dropping one block: %v, want %v", got, want)
	}
	s.takeCalls()
	// No limit: open from anywhere again, IPv4 and IPv6.
	if _, err := d.Publish(ctx, published, []int{3306}, compute.Access{}); err != nil {
		t.Fatal(err)
	}
	if got, want := s.state(), []string{"IPv4 3306 anywhere", "IPv6 3306 anywhere"}; !slices.Equal(got, want) {
		t.Errorf("after lifting the limit: %v, want %v", got, want)
	}
}

// A rule someone added by hand (another port, a wider block) is removed:
// the group is the instance's own and says exactly what access allows.
func TestPublishRemovesRulesAccessDoesNotAllow(t *testing.T) {
	s, d := newRuleStore(t)
	s.add("IPv4", 22, "0.0.0.0/0")
	s.add("IPv4", 3306, "10.0.0.0/8")
	s.add("IPv4", 3306, "10.0.0.0/8") // a duplicate
	if _, err := d.Publish(context.Background(), published, []int{3306}, compute.Access{AllowedCIDRs: []string{"10.0.0.0/8"}}); err != nil {
		t.Fatal(err)
	}
	if got, want := s.state(), []string{"IPv4 3306 10.0.0.0/8"}; !slices.Equal(got, want) {
		t.Errorf("%v, want %v", got, want)
	}
}

// A create that fails half-way leaves only what both the old and the new
// access allow, and says which rule it could not make; the next call
// completes it.
func TestPublishCutShortLetsInNoMoreThanBoth(t *testing.T) {
	s, d := newRuleStore(t)
	s.add("IPv4", 3306, nil)
	s.add("IPv6", 3306, nil)
	s.failPost = 2
	_, err := d.Publish(context.Background(), published, []int{3306}, compute.Access{AllowedCIDRs: []string{"10.0.0.0/8", "172.16.0.0/12"}})
	if err == nil || !strings.Contains(err.Error(), "opening port 3306 to 172.16.0.0/12 in security group "+sgID) {
		t.Fatalf("err = %v", err)
	}
	if got, want := s.state(), []string{"IPv4 3306 10.0.0.0/8"}; !slices.Equal(got, want) {
		t.Errorf("after the failure: %v, want %v (never the open rules and the limited ones together)", got, want)
	}
	if _, err := d.Publish(context.Background(), published, []int{3306}, compute.Access{AllowedCIDRs: []string{"10.0.0.0/8", "172.16.0.0/12"}}); err != nil {
		t.Fatal(err)
	}
	if got, want := s.state(), []string{"IPv4 3306 10.0.0.0/8", "IPv4 3306 172.16.0.0/12"}; !slices.Equal(got, want) {
		t.Errorf("after the retry: %v, want %v", got, want)
	}
}

// is_public is refused before anything is read or written; so is a
// server without its own group.
func TestPublishRefusesWhatTheDriverCannotDo(t *testing.T) {
	s, d := newRuleStore(t)
	err := d.CheckAccess(context.Background(), compute.Access{Public: true})
	if !errors.Is(err, compute.ErrInvalid) || !strings.Contains(err.Error(), "no floating IPs") {
		t.Fatalf("CheckAccess(public) = %v", err)
	}
	if _, err := d.Publish(context.Background(), published, []int{3306}, compute.Access{Public: true}); !errors.Is(err, compute.ErrInvalid) {
		t.Fatalf("Publish(public) = %v", err)
	}
	if _, err := d.Publish(context.Background(), compute.Server{ID: serverID}, []int{3306}, compute.Access{}); !errors.Is(err, compute.ErrInvalid) || !strings.Contains(err.Error(), "no security group") {
		t.Fatalf("Publish without a group = %v", err)
	}
	if calls := s.takeCalls(); len(calls) != 0 {
		t.Errorf("refusals made calls %v", calls)
	}
}
