package publish

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/gophercloud/gophercloud/v2"

	"strata/agent/wire"
)

// mgmt is Trove's management API for datastore versions and their
// configuration parameters — served by a real Trove and by the strata
// controller alike. The client is the same; the dialect differs:
// strata's takes a port and boot timeout with a version and every rule
// type with its allowed values and apply method, Trove's only integer and
// string parameters.
type mgmt struct {
	// service names it in messages: "strata controller" or "trove".
	service string
	// client.Endpoint is the project's base: .../v1.0/PROJECT/.
	client *gophercloud.ServiceClient
	strata bool
}

func (m *mgmt) fail(action string, err error) error {
	return serviceError(m.service, m.client.Endpoint, action, err)
}

// StrataHeader is set by the strata controller on its management
// answers, so a client can tell it from a Trove.
const StrataHeader = "X-Strata-Controller"

// mgmtVersion is a datastore version as the management API shows it.
type mgmtVersion struct {
	ID               string   `json:"id"`
	Name             string   `json:"name"`
	DatastoreName    string   `json:"datastore_name"`
	DatastoreManager string   `json:"datastore_manager"`
	Image            string   `json:"image"`
	Packages         []string `json:"packages"`
	Active           bool     `json:"active"`
	Default          bool     `json:"default"`
	Port             int      `json:"port,omitempty"`
	BootTimeout      int      `json:"boot_timeout,omitempty"`
}

// versionSpec is what publishing sets on a version.
type versionSpec struct {
	Datastore, Name, Manager, Image string
	Packages                        []string
	Port, BootTimeout               int
}

// probe lists the versions and reports whether the answer came from a
// strata controller.
func (m *mgmt) probe(ctx context.Context) ([]mgmtVersion, bool, error) {
	var body struct {
		Versions []mgmtVersion `json:"versions"`
	}
	resp, err := m.client.Get(ctx, m.client.ServiceURL("mgmt", "datastore-versions"), &body, &gophercloud.RequestOpts{OkCodes: []int{200}})
	if err != nil {
		return nil, false, m.fail("listing datastore versions", err)
	}
	for i := range body.Versions {
		body.Versions[i].Packages = slices.DeleteFunc(body.Versions[i].Packages, func(s string) bool { return s == "" })
	}
	return body.Versions, resp.Header.Get(StrataHeader) != "", nil
}

func (m *mgmt) versions(ctx context.Context) ([]mgmtVersion, error) {
	vs, _, err := m.probe(ctx)
	return vs, err
}

// register creates the version or brings it up to date. It reports the
// version's id and whether it was created.
func (m *mgmt) register(ctx context.Context, spec versionSpec, out io.Writer) (string, bool, error) {
	all, err := m.versions(ctx)
	if err != nil {
		return "", false, err
	}
	var cur *mgmtVersion
	hasVersions := false
	for i, v := range all {
		if v.DatastoreName == spec.Datastore {
			hasVersions = true
			if v.Name == spec.Name {
				cur = &all[i]
			}
		}
	}
	if cur == nil {
		body := map[string]any{
			"datastore_name": spec.Datastore, "datastore_manager": spec.Manager, "name": spec.Name,
			"image": spec.Image, "active": true,
			// Trove leaves a new datastore without a default version, and
			// then `trove create` needs --datastore_version: the first
			// version becomes the default.
			"default": !hasVersions,
		}
		if len(spec.Packages) > 0 {
			body["packages"] = spec.Packages
		}
		if m.strata {
			body["port"], body["boot_timeout"] = spec.Port, spec.BootTimeout
		}
		_, err := m.client.Post(ctx, m.client.ServiceURL("mgmt", "datastore-versions"), map[string]any{"version": body}, nil,
			&gophercloud.RequestOpts{OkCodes: []int{202}})
		if err != nil {
			return "", false, m.fail(fmt.Sprintf("creating datastore version %s %s", spec.Datastore, spec.Name), err)
		}
		// Trove answers 202 without a body: find the new version's id.
		all, err := m.versions(ctx)
		if err != nil {
			return "", false, err
		}
		for _, v := range all {
			if v.DatastoreName == spec.Datastore && v.Name == spec.Name {
				fmt.Fprintf(out, "%s: created datastore version %s %s (%s) booting image %s\n", m.service, spec.Datastore, spec.Name, v.ID, spec.Image)
				return v.ID, true, nil
			}
		}
		return "", false, &ServiceError{Service: m.service, URL: m.client.Endpoint, Action: "creating datastore version " + spec.Name,
			Message: "accepted the version but does not list it"}
	}
	edit := map[string]any{}
	if cur.Image != spec.Image {
		edit["image"] = spec.Image
	}
	if cur.DatastoreManager != spec.Manager {
		edit["datastore_manager"] = spec.Manager
	}
	if !cur.Active {
		edit["active"] = true
	}
	if !slices.Equal(cur.Packages, spec.Packages) && len(spec.Packages) > 0 {
		edit["packages"] = spec.Packages
	}
	if m.strata && cur.Port != spec.Port {
		edit["port"] = spec.Port
	}
	if m.strata && cur.BootTimeout != spec.BootTimeout {
		edit["boot_timeout"] = spec.BootTimeout
	}
	if len(edit) == 0 {
		fmt.Fprintf(out, "%s: datastore version %s %s (%s) is up to date\n", m.service, spec.Datastore, spec.Name, cur.ID)
		return cur.ID, false, nil
	}
	_, err = m.client.Patch(ctx, m.client.ServiceURL("mgmt", "datastore-versions", cur.ID), edit, nil,
		&gophercloud.RequestOpts{OkCodes: []int{202}})
	if err != nil {
		return "", false, m.fail(fmt.Sprintf("updating datastore version %s %s", spec.Datastore, spec.Name), err)
	}
	keys := make([]string, 0, len(edit))
	for k := range edit {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	fmt.Fprintf(out, "%s: updated datastore version %s %s (%s): %s\n", m.service, spec.Datastore, spec.Name, cur.ID, strings.Join(keys, ", "))
	return cur.ID, false, nil
}

// mgmtParameter is a configuration parameter in the management API's
// shape. Trove keeps min_size and max_size as integers; the strata
// controller as decimal strings (64-bit limits and floats survive).
type mgmtParameter struct {
	Name            string          `json:"name"`
	Type            string          `json:"type,omitempty"`
	DataType        string          `json:"data_type,omitempty"`
	RestartRequired json.RawMessage `json:"restart_required"`
	MinSize         json.RawMessage `json:"min_size,omitempty"`
	MaxSize         json.RawMessage `json:"max_size,omitempty"`
	AllowedValues   []string        `json:"allowed_values,omitempty"`
	Apply           string          `json:"apply,omitempty"`
	Description     string          `json:"description,omitempty"`
}

// paramState is a parameter reduced to what is compared.
type paramState struct {
	Type, Min, Max, Apply, Description string
	Restart                            bool
	Allowed                            string
}

func number(raw json.RawMessage) string {
	s := strings.Trim(strings.TrimSpace(string(raw)), `"`)
	if s == "" || s == "null" {
		return "0" // Trove leaves out a zero bound
	}
	return s
}

func (p mgmtParameter) state() paramState {
	t := p.Type
	if t == "" {
		t = p.DataType
	}
	r := strings.TrimSpace(string(p.RestartRequired))
	return paramState{Type: t, Min: number(p.MinSize), Max: number(p.MaxSize), Apply: p.Apply, Description: p.Description,
		Restart: r == "true" || r == "1", Allowed: strings.Join(p.AllowedValues, ",")}
}

// paramBody is the create/update body for a rule in this dialect, and
// the state the service should then report.
func (m *mgmt) paramBody(r wire.ParameterRule) (map[string]any, paramState) {
	body := map[string]any{"name": r.Name, "data_type": r.Type, "restart_required": map[bool]int{true: 1, false: 0}[r.RestartRequired]}
	st := paramState{Type: r.Type, Restart: r.RestartRequired, Min: "0", Max: "0"}
	if r.Type == "integer" || r.Type == "float" {
		lo, hi := "", ""
		if r.Min != nil {
			lo = r.Min.String()
		}
		if r.Max != nil {
			hi = r.Max.String()
		}
		if !m.strata {
			// Trove insists on both bounds for integers.
			if lo == "" {
				lo = strconv.FormatInt(math.MinInt64, 10)
			}
			if hi == "" {
				hi = strconv.FormatInt(math.MaxInt64, 10)
			}
		}
		if lo != "" {
			body["min_size"], st.Min = lo, lo
		}
		if hi != "" {
			body["max_size"], st.Max = hi, hi
		}
	}
	if m.strata {
		body["apply"], st.Apply = r.ApplyMethod(), r.ApplyMethod()
		if len(r.AllowedValues) > 0 {
			body["allowed_values"], st.Allowed = r.AllowedValues, strings.Join(r.AllowedValues, ",")
		}
		if r.Description != "" {
			body["description"], st.Description = r.Description, r.Description
		}
	}
	return body, st
}

// comparable drops what this dialect does not keep.
func (m *mgmt) comparable(s paramState) paramState {
	if !m.strata {
		s.Apply, s.Allowed, s.Description = "", "", ""
	}
	return s
}

// rulesReport says what syncing the rules did.
type rulesReport struct {
	Added, Updated, Removed, Unchanged []string
	// Skipped are rules this service cannot hold (Trove's management API
	// takes integer and string parameters only).
	Skipped []string
}

// syncRules makes the version's configuration parameters equal the rules:
// missing ones are created, changed ones updated, others deleted.
func (m *mgmt) syncRules(ctx context.Context, versionID string, rules []wire.ParameterRule) (rulesReport, error) {
	var rep rulesReport
	base := m.client.ServiceURL("mgmt", "datastores", "versions", versionID, "parameters")
	var list struct {
		Parameters []mgmtParameter `json:"configuration-parameters"`
	}
	if _, err := m.client.Get(ctx, base, &list, &gophercloud.RequestOpts{OkCodes: []int{200}}); err != nil {
		return rep, m.fail("listing the configuration parameters of version "+versionID, err)
	}
	current := map[string]mgmtParameter{}
	for _, p := range list.Parameters {
		current[p.Name] = p
	}
	want := map[string]bool{}
	for _, r := range rules {
		if !m.strata && r.Type != "integer" && r.Type != "string" {
			// Left alone, not deleted: trove-manage may have loaded it.
			rep.Skipped = append(rep.Skipped, r.Name+" ("+r.Type+")")
			want[r.Name] = true
			continue
		}
		want[r.Name] = true
		body, st := m.paramBody(r)
		cur, ok := current[r.Name]
		switch {
		case !ok:
			if _, err := m.client.Post(ctx, base, map[string]any{"configuration-parameter": body}, nil,
				&gophercloud.RequestOpts{OkCodes: []int{200, 201}}); err != nil {
				return rep, m.fail("adding configuration parameter "+r.Name, err)
			}
			rep.Added = append(rep.Added, r.Name)
		case m.comparable(cur.state()) != m.comparable(st):
			if _, err := m.client.Put(ctx, base+"/"+r.Name, map[string]any{"configuration-parameter": body}, nil,
				&gophercloud.RequestOpts{OkCodes: []int{200}}); err != nil {
				return rep, m.fail("updating configuration parameter "+r.Name, err)
			}
			rep.Updated = append(rep.Updated, r.Name)
		default:
			rep.Unchanged = append(rep.Unchanged, r.Name)
		}
	}
	for _, p := range list.Parameters {
		if want[p.Name] {
			continue
		}
		if _, err := m.client.Delete(ctx, base+"/"+p.Name, &gophercloud.RequestOpts{OkCodes: []int{200, 202, 204}}); err != nil {
			return rep, m.fail("removing configuration parameter "+p.Name, err)
		}
		rep.Removed = append(rep.Removed, p.Name)
	}
	return rep, nil
}
