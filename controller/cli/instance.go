package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"strata/agent/wire"
	"strata/controller/agentendpoint"
	"strata/controller/compute"
	"strata/controller/instances"
	"strata/controller/lifecycle"
)

// newInstanceCommand is the management view of instances on the
// controller host: what GET /mgmt/instances and the management actions
// do, read from and queued into the controller's database. The running
// controller carries the actions out (its task engine reboots, its agent
// endpoint delivers the stop).
func newInstanceCommand() *cobra.Command {
	var sf stateFlags
	cmd := &cobra.Command{Use: "instance", Short: "Every project's instances: list, show, reboot, stop, reset-task-status, rebuild (the management API, on the controller host)"}
	sf.register(cmd)
	withManager := func(cmd *cobra.Command, fn func(ctx context.Context, m *lifecycle.Manager) error) error {
		db, err := sf.open(cmd.Context())
		if err != nil {
			return err
		}
		defer db.Close()
		log, _ := logger("warn")
		return fn(cmd.Context(), &lifecycle.Manager{DB: db, Registry: sf.registry(db), Images: sf.images(db),
			Agents: storeAgents{&agentendpoint.SQLStore{DB: db}}, Logger: log})
	}

	var deleted bool
	var project string
	list := &cobra.Command{
		Use:   "list",
		Short: "List the instances of every project (or --project's), live or --deleted",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return withManager(cmd, func(ctx context.Context, m *lifecycle.Manager) error {
				all, err := instances.List(ctx, m.DB, instances.ListOptions{Project: project, Deleted: deleted})
				if err != nil {
					return err
				}
				var rows [][]any
				for _, in := range all {
					status, _ := m.Status(in)
					fault := "-"
					if in.Fault != nil {
						fault = oneLine(in.Fault.Message, 60)
					}
					rows = append(rows, []any{in.ID, in.ProjectID, in.Name, status, in.Task, orNone(serverID(in)), orNone(in.Host), fault})
				}
				table(cmd.OutOrStdout(), "ID\tPROJECT\tNAME\tSTATUS\tTASK\tSERVER\tHOST\tFAULT", rows)
				return nil
			})
		},
	}
	list.Flags().BoolVar(&deleted, "deleted", false, "list deleted instances instead")
	list.Flags().StringVar(&project, "project", "", "only this project's (id)")

	show := &cobra.Command{
		Use:   "show ID",
		Short: "Show one instance of any project, with its server, task, agent report and fault",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withManager(cmd, func(ctx context.Context, m *lifecycle.Manager) error {
				in, err := instances.Get(ctx, m.DB, "", args[0])
				if err != nil {
					return err
				}
				writeInstance(cmd.OutOrStdout(), m, in)
				return nil
			})
		},
	}
	reboot := &cobra.Command{
		Use:   "reboot ID",
		Short: "Reboot the instance's server (not just its database); the running controller does it",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withManager(cmd, func(ctx context.Context, m *lifecycle.Manager) error {
				if err := m.Reboot(ctx, args[0]); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "reboot of %s queued (status REBOOT until its agent reports the database running)\n", args[0])
				return nil
			})
		},
	}
	var image string
	rebuild := &cobra.Command{
		Use:   "rebuild ID --image IMAGE",
		Short: "Move the instance onto another image of its datastore version, keeping its data volume; rolled back if the new guest fails",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withManager(cmd, func(ctx context.Context, m *lifecycle.Manager) error {
				if err := m.Rebuild(ctx, args[0], image); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "rebuild of %s onto image %s queued (status REBUILD until the new agent has adopted the data volume; on failure it rolls back to the old image and shows the fault)\n", args[0], image)
				return nil
			})
		},
	}
	rebuild.Flags().StringVar(&image, "image", "", "the image to rebuild onto (id in the controller's image store)")
	rebuild.MarkFlagRequired("image")
	var wait time.Duration
	stop := &cobra.Command{
		Use:   "stop ID",
		Short: "Stop the instance's database, leaving its server up (the restart action starts it again)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withManager(cmd, func(ctx context.Context, m *lifecycle.Manager) error {
				m.GuestCallTimeout = wait
				err := m.Stop(ctx, args[0])
				if err == nil {
					fmt.Fprintf(cmd.OutOrStdout(), "database of %s stopped\n", args[0])
				}
				return err
			})
		},
	}
	stop.Flags().DurationVar(&wait, "wait", time.Minute, "how long to wait for the agent (the stop stays queued after, until it runs or expires)")
	reset := &cobra.Command{
		Use:   "reset-task-status ID",
		Short: "Cancel the instance's pending tasks and set its task to none, keeping its fault",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withManager(cmd, func(ctx context.Context, m *lifecycle.Manager) error {
				if err := m.ResetTask(ctx, args[0]); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "task of %s reset\n", args[0])
				return nil
			})
		},
	}
	cmd.AddCommand(list, show, reboot, stop, reset, rebuild)
	return cmd
}

func serverID(in instances.Instance) string {
	var s compute.Server
	if len(in.Server) == 0 || json.Unmarshal(in.Server, &s) != nil {
		return ""
	}
	return s.ID
}

func writeInstance(w io.Writer, m *lifecycle.Manager, in instances.Instance) {
	status, operating := m.Status(in)
	rows := [][]any{{"id", in.ID}, {"project", in.ProjectID}, {"name", in.Name}, {"status", status}, {"operating_status", orNone(operating)},
		{"task", in.Task}, {"server", orNone(serverID(in))}, {"host", orNone(in.Host)}, {"volume_gb", in.VolumeSizeGB},
		{"created", in.CreatedAt.Format(time.RFC3339)}}
	if in.TLSFingerprint != "" {
		rows = append(rows, []any{"tls_fingerprint", in.TLSFingerprint})
	}
	if r := in.Reported; r != nil {
		rows = append(rows, []any{"agent", fmt.Sprintf("%s %s, last heartbeat %s", r.AgentVersion, r.Status, r.ReceivedAt.Format(time.RFC3339))})
	}
	if f := in.Fault; f != nil {
		rows = append(rows, []any{"fault", oneLine(f.Message, 200)}, []any{"fault_at", f.At.Format(time.RFC3339)})
	}
	if !in.DeletedAt.IsZero() {
		rows = append(rows, []any{"deleted", in.DeletedAt.Format(time.RFC3339)})
	}
	table(w, "FIELD\tVALUE", rows)
}

func oneLine(s string, n int) string {
	out := []rune{}
	for _, r := range s {
		if r == '\n' || r == '\t' {
			r = ' '
		}
		out = append(out, r)
		if len(out) == n {
			return string(out) + "..."
		}
	}
	return string(out)
}

// storeAgents reaches agents through the controller's database: an
// operation queued here is delivered by the running controller's agent
// endpoint (it re-reads pending operations every few seconds), and its
// result is read back from the same table.
type storeAgents struct{ s *agentendpoint.SQLStore }

func (a storeAgents) Queue(ctx context.Context, id string, op wire.Operation, opts agentendpoint.QueueOptions) error {
	return a.s.EnqueueOp(ctx, id, op, opts)
}

func (a storeAgents) Result(ctx context.Context, id, opID string) (wire.Result, bool, error) {
	return a.s.OpResult(ctx, id, opID)
}

func (a storeAgents) Call(ctx context.Context, id string, op wire.Operation, opts agentendpoint.QueueOptions, timeout time.Duration) (wire.Result, error) {
	if err := a.Queue(ctx, id, op, opts); err != nil {
		return wire.Result{}, err
	}
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		res, done, err := a.s.OpResult(wctx, id, op.ID)
		if err != nil || done {
			return res, err
		}
		select {
		case <-wctx.Done():
			return wire.Result{}, wctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// Disconnect is the running controller's business.
func (storeAgents) Disconnect(string) {}

func (a storeAgents) ForgetPayload(ctx context.Context, id, opID string) error {
	return a.s.ForgetPayload(ctx, id, opID)
}

var _ lifecycle.Agents = storeAgents{}
