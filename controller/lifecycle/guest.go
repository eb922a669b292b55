package lifecycle

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"strata/agent/wire"
	"strata/controller/agentendpoint"
	"strata/controller/instances"
	"strata/controller/store"
)

// Guest loads a project's instance for a call to its agent: it must be
// ACTIVE or RESTART_REQUIRED (Trove refuses guest calls in other states).
func (m *Manager) Guest(ctx context.Context, project, id string) (instances.Instance, error) {
	in, err := m.get(ctx, m.DB, project, id)
	if err != nil {
		return in, err
	}
	status, _ := m.Status(in)
	if err := requireStatus(in, status, "reach the database of", instances.StatusActive, instances.StatusRestartRequired); err != nil {
		return in, err
	}
	return in, nil
}

// Call runs one operation on the instance's agent and waits for its
// result (GuestCallTimeout). ErrGuestTimeout means it is still queued and
// will run when the agent gets to it, until GuestOpTimeout; an operation
// that changes the guest is then watched: if it ends in failure, the
// failure is recorded on the instance (ReportWatched), so that nothing
// answered 202 fails unseen.
func (m *Manager) Call(ctx context.Context, in instances.Instance, kind wire.Kind, args any) (wire.Result, error) {
	op := wire.Operation{ID: string(kind) + "-" + randomID(), Kind: kind}
	if args != nil {
		data, err := json.Marshal(args)
		if err != nil {
			return wire.Result{}, err
		}
		op.Args = data
	}
	timeout := m.GuestCallTimeout
	if timeout <= 0 {
		timeout = time.Minute
	}
	opTimeout := max(m.GuestOpTimeout, timeout)
	if m.GuestOpTimeout <= 0 {
		opTimeout = max(10*time.Minute, timeout)
	}
	watch := wire.ClassOf(kind).Mutates
	res, err := m.Agents.Call(ctx, in.ID, op, agentendpoint.QueueOptions{Expires: m.now().Add(opTimeout), Watch: watch}, timeout)
	if err == nil && watch {
		// The caller gets this result: nothing to report later.
		if uerr := agentendpoint.Unwatch(context.WithoutCancel(ctx), m.DB, in.ID, op.ID, m.now()); uerr != nil {
			m.log().Error("could not unwatch an operation", "instance", in.ID, "op", op.ID, "err", uerr)
		}
	}
	if err == nil && kind == wire.KindEnableRoot {
		// The root password goes to the caller and nowhere else.
		if ferr := m.Agents.ForgetPayload(context.WithoutCancel(ctx), in.ID, op.ID); ferr != nil {
			m.log().Error("could not drop the stored root password", "instance", in.ID, "err", ferr)
		}
	}
	if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
		return res, wrap(ErrGuestTimeout, "instance %s did not answer %s within %s; the operation stays queued", in.ID, kind, timeout)
	}
	return res, err
}

func randomID() string {
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// ReportWatched records on their instances the failures of watched
// operations (guest calls answered 202) that nobody saw: the instance keeps
// its status and shows the fault. Successes are simply forgotten.
func (m *Manager) ReportWatched(ctx context.Context) error {
	list, err := agentendpoint.WatchedResults(ctx, m.DB)
	if err != nil {
		return err
	}
	for _, w := range list {
		err := m.DB.InTx(ctx, func(tx *store.Tx) error {
			now := m.now()
			if e := w.Result.Error; e != nil {
				f := instances.Fault{Message: fmt.Sprintf("%s (operation %s, accepted earlier) failed in the guest: %s: %s", w.Kind, w.OpID, e.Code, e.Message)}
				if err := instances.SetFault(ctx, tx, w.InstanceID, f, false, now); err != nil && !errors.Is(err, instances.ErrNotFound) {
					return err
				}
				m.log().Warn("an accepted guest operation failed; recorded on the instance", "instance", w.InstanceID, "op", w.OpID, "code", e.Code)
			}
			return agentendpoint.Unwatch(ctx, tx, w.InstanceID, w.OpID, now)
		})
		if err != nil {
			return err
		}
	}
	return nil
}
