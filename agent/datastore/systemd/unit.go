// Package systemd controls a datastore's systemd unit with systemctl, for
// managers running in the guest. PID 1 does the work, so the agent's own
// sandbox (mount namespace, capabilities) does not leak into the database
// server's.
//
// It must stay a thin wrapper: no retries, no status interpretation; the
// manager decides what a failure means.
package systemd

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
)

// Unit is one systemd unit, e.g. "mariadb.service".
type Unit struct {
	Name string
	// Systemctl is the systemctl binary (default "systemctl").
	Systemctl string
}

func (u Unit) Start(ctx context.Context) error   { return u.run(ctx, "start") }
func (u Unit) Stop(ctx context.Context) error    { return u.run(ctx, "stop") }
func (u Unit) Restart(ctx context.Context) error { return u.run(ctx, "restart") }
func (u Unit) Enable(ctx context.Context) error  { return u.run(ctx, "enable") }

// DaemonReload makes systemd re-read unit files.
func (u Unit) DaemonReload(ctx context.Context) error { return u.exec(ctx, "daemon-reload") }

func (u Unit) run(ctx context.Context, verb string) error {
	return u.exec(ctx, verb, "--", u.Name)
}

func (u Unit) exec(ctx context.Context, args ...string) error {
	bin := u.Systemctl
	if bin == "" {
		bin = "systemctl"
	}
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, args...)
	// Debian's database packages also ship SysV init scripts; enabling
	// the unit would then run update-rc.d, which writes /etc/rc?.d — read
	// only in the agent's sandbox, and meaningless under systemd. The
	// native unit's symlink in /etc/systemd/system is all that counts.
	cmd.Env = append(os.Environ(), "SYSTEMCTL_SKIP_SYSV=1")
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("systemctl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return nil
}
