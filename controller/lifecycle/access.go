package lifecycle

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"strata/controller/compute"
	"strata/controller/instances"
	"strata/controller/store"
	"strata/controller/tasks"
)

// Access (Trove's access: is_public, allowed_cidrs). The instance row's
// access column is what is in force: the create task writes it as asked
// once the server is published, and an update's access task writes the
// new value in the same statement that records the republished server.
// The compute driver publishes (compute.Publisher); a driver without it
// has no public addresses, and public is refused there with a 400.

// KindAccess is the task that changes an instance's access.
const KindAccess = "access"

type accessPayload struct {
	Access instances.Access `json:"access"`
}

// checkAccess validates access and asks the driver whether it can honour
// it; it returns the access in canonical form.
func (m *Manager) checkAccess(ctx context.Context, a instances.Access) (instances.Access, error) {
	cidrs, err := CheckAllowedCIDRs(a.AllowedCIDRs)
	if err != nil {
		return a, err
	}
	a = instances.Access{IsPublic: a.IsPublic, AllowedCIDRs: cidrs}
	p, ok := m.Compute.(compute.Publisher)
	if !ok {
		if a.IsPublic {
			return a, wrap(ErrBadRequest, "instance.access.is_public: this controller's compute driver cannot publish instances; they are reachable at their private address only")
		}
		return a, nil
	}
	if err := p.CheckAccess(ctx, computeAccess(a)); errors.Is(err, compute.ErrInvalid) {
		return a, wrap(ErrBadRequest, "instance.access: %s", strings.TrimPrefix(err.Error(), compute.ErrInvalid.Error()+": "))
	} else if err != nil {
		return a, fmt.Errorf("checking the instance's access: %w", err)
	}
	return a, nil
}

func computeAccess(a instances.Access) compute.Access {
	return compute.Access{Public: a.IsPublic, AllowedCIDRs: a.AllowedCIDRs}
}

// publish brings the server's publication to access (create and access
// tasks) and returns the server as the driver reports it then.
func (m *Manager) publish(ctx context.Context, srv compute.Server, port int, a *instances.Access) (compute.Server, error) {
	p, ok := m.Compute.(compute.Publisher)
	if !ok {
		if a != nil && a.IsPublic {
			return srv, tasks.Fail("", "the compute driver cannot publish instances")
		}
		return srv, nil
	}
	want := compute.Access{}
	if a != nil {
		want = computeAccess(*a)
	}
	out, err := p.Publish(ctx, srv, []int{port}, want)
	if errors.Is(err, compute.ErrInvalid) {
		return srv, tasks.Fail("", "publishing the instance: %v", err)
	}
	if err != nil {
		return srv, fmt.Errorf("publish: %w", err)
	}
	return out, nil
}

// AccessChange is an access update; a field not given keeps what is in
// force (troveclient's --allowed-cidr alone changes only the CIDRs).
type AccessChange struct {
	IsPublic     *bool
	AllowedCIDRs *[]string
}

// SetAccess changes an instance's access: it queues the access task and
// returns it for the caller to wait on (as a configuration change).
// The instance keeps serving meanwhile; its access shows the new value
// once it is in force.
func (m *Manager) SetAccess(ctx context.Context, project, id string, ch AccessChange) (Apply, error) {
	var apply Apply
	err := m.DB.InTx(ctx, func(tx *store.Tx) error {
		in, err := m.get(ctx, tx, project, id)
		if err != nil {
			return err
		}
		a := instances.Access{AllowedCIDRs: []string{}}
		if in.Access != nil {
			a = *in.Access
		}
		if ch.IsPublic != nil {
			a.IsPublic = *ch.IsPublic
		}
		if ch.AllowedCIDRs != nil {
			a.AllowedCIDRs = *ch.AllowedCIDRs
		}
		if a, err = m.checkAccess(ctx, a); err != nil {
			return err
		}
		status, _ := m.Status(in)
		if err := requireStatus(in, status, "change the access of", instances.StatusActive, instances.StatusRestartRequired); err != nil {
			return err
		}
		if _, ok := serverOf(in); !ok {
			return wrap(ErrUnprocessable, "instance %s has no server yet", in.ID)
		}
		// An instance's tasks run one at a time in order: the last
		// request wins.
		t, err := tasks.Enqueue(ctx, tx, tasks.New{InstanceID: in.ID, Kind: KindAccess, Step: "publish",
			Payload: accessPayload{Access: a}, Deadline: m.now().Add(5 * time.Minute)}, m.now())
		if err != nil {
			return err
		}
		apply = Apply{InstanceID: in.ID, Name: in.Name, TaskID: t}
		return nil
	})
	if err == nil {
		m.kick()
	}
	return apply, err
}

func (m *Manager) runAccess(ctx context.Context, t *tasks.Task) (tasks.Result, error) {
	in, srv, p, err := serverTask[accessPayload](ctx, m, t)
	if err != nil {
		return tasks.Result{}, err
	}
	v, err := m.Registry.Version(ctx, in.DatastoreVersionID)
	if err != nil {
		return tasks.Result{}, err
	}
	srv, err = m.publish(ctx, srv, v.Port, &p.Access)
	if err != nil {
		return tasks.Result{}, err
	}
	data, _ := json.Marshal(srv)
	access, _ := json.Marshal(p.Access)
	if err := instances.Update(ctx, m.DB, in.ID, m.now(), `server = ?, access = ?`, string(data), string(access)); err != nil {
		return tasks.Result{}, err
	}
	m.log().Info("instance access changed", "instance", in.ID, "public", p.Access.IsPublic, "allowed_cidrs", p.Access.AllowedCIDRs)
	return tasks.Result{Done: true}, nil
}
