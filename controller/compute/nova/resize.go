package nova

import (
	"context"
	"fmt"
	"strings"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/instanceactions"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/servers"

	"strata/controller/compute"
)

// Flavor resize on Nova: the server is resized to the smallest Nova flavor
// with the flavor's RAM and vCPUs whose root disk holds the server's
// image (as at create), then the resize is confirmed. Nova stops the
// guest, moves its root disk to the new flavor (on the same host when the
// cloud allows it: allow_resize_to_same_host), starts it again with the
// data volume attached, and waits in VERIFY_RESIZE for the confirm.

var _ compute.FlavorResizer = (*Driver)(nil)

// ResizeServer gives the server the Nova flavor for f. A server already on
// it only needs to run (a stopped one is started); one left in
// VERIFY_RESIZE by an earlier call cut short is confirmed if it is on it,
// reverted otherwise. A resize Nova refuses, or that its compute host
// gives up (the server back on its old flavor), is an error wrapping
// compute.ErrInvalid with Nova's reason: the same request gets the same
// answer.
func (d *Driver) ResizeServer(ctx context.Context, srv compute.Server, f compute.Flavor) error {
	if srv.ID == "" {
		return fmt.Errorf("%w: no server to resize", compute.ErrInvalid)
	}
	cur, err := servers.Get(ctx, d.compute, srv.ID).Extract()
	if err != nil {
		return serviceErr("nova", "reading server "+srv.ID, err)
	}
	imageID, _ := cur.Image["id"].(string)
	target, err := d.flavor(ctx, f.RAMMB, f.VCPUs, d.imageNeeds(ctx, imageID))
	if err != nil {
		return err
	}
	if cur.Status == "VERIFY_RESIZE" {
		if flavorName(*cur) == target.Name {
			return d.finishResize(ctx, srv.ID, true)
		}
		// A resize to another flavor, left by a call cut short: back to
		// where it was, then to the target.
		if err := d.finishResize(ctx, srv.ID, false); err != nil {
			return err
		}
		if cur, err = servers.Get(ctx, d.compute, srv.ID).Extract(); err != nil {
			return serviceErr("nova", "reading server "+srv.ID, err)
		}
	}
	if flavorName(*cur) == target.Name {
		if cur.Status == "SHUTOFF" {
			if err := d.start(ctx, srv.ID); err != nil {
				return err
			}
		}
		_, err := d.awaitActive(ctx, srv.ID, nil, "")
		return err
	}
	before := flavorName(*cur)
	if err := servers.Resize(ctx, d.compute, srv.ID, servers.ResizeOpts{FlavorRef: target.ID}).ExtractErr(); err != nil {
		refused := gophercloud.ResponseCodeIs(err, 400) || gophercloud.ResponseCodeIs(err, 403)
		err = serviceErr("nova", fmt.Sprintf("resizing server %s from flavor %s to %s (%s)", srv.ID, before, target.Name, target.ID), err)
		if refused {
			return fmt.Errorf("%w: %w", compute.ErrInvalid, err)
		}
		return err
	}
	d.log.Info("server resize asked", "server", srv.ID, "from", before, "to", target.Name)
	var failed error
	err = d.wait(ctx, "nova server "+srv.ID+" resizing to "+target.Name, func() (bool, error) {
		cur, err := servers.Get(ctx, d.compute, srv.ID).Extract()
		if err != nil {
			return false, serviceErr("nova", "reading server "+srv.ID, err)
		}
		switch {
		case cur.Status == "VERIFY_RESIZE":
			return true, nil
		case cur.Status == "ERROR":
			return false, fmt.Errorf("nova: server %s went to ERROR resizing to %s: %s", srv.ID, target.Name, faultText(d.faultOf(ctx, cur)))
		case cur.Status == "ACTIVE" && cur.TaskState == "" && flavorName(*cur) == before:
			// Nova gave up (no host for the new flavor, a disk it cannot
			// shrink) and left the server as it was: the reason is in the
			// resize action's events.
			failed = fmt.Errorf("%w: nova did not resize server %s to %s: %s", compute.ErrInvalid, srv.ID, target.Name, d.actionError(ctx, srv.ID, "resize"))
			return true, nil
		}
		return false, nil
	})
	if err != nil {
		return err
	}
	if failed != nil {
		return failed
	}
	return d.finishResize(ctx, srv.ID, true)
}

// finishResize confirms (or reverts) a resize waiting in VERIFY_RESIZE
// and waits until the server is ACTIVE.
func (d *Driver) finishResize(ctx context.Context, id string, confirm bool) error {
	what, call := "confirming", servers.ConfirmResize
	if !confirm {
		what, call = "reverting", servers.RevertResize
	}
	if err := call(ctx, d.compute, id).ExtractErr(); err != nil && !gophercloud.ResponseCodeIs(err, 409) {
		return serviceErr("nova", what+" the resize of server "+id, err)
	}
	_, err := d.awaitActive(ctx, id, nil, "")
	if err == nil {
		d.log.Info("server resize finished", "server", id, "confirmed", confirm)
	}
	return err
}

// flavorName is the server's flavor as Nova embeds it from microversion
// 2.47 on (original_name; an older Nova's id link would be "").
func flavorName(s servers.Server) string {
	n, _ := s.Flavor["original_name"].(string)
	return n
}

// actionError is what Nova recorded against the newest action of that
// kind: the failed event and its traceback's last line, or a note that it
// recorded none.
func (d *Driver) actionError(ctx context.Context, serverID, action string) string {
	pages, err := instanceactions.List(d.compute, serverID, nil).AllPages(ctx)
	if err != nil {
		return "(its instance actions could not be read: " + err.Error() + ")"
	}
	all, err := instanceactions.ExtractInstanceActions(pages)
	if err != nil {
		return "(its instance actions could not be read: " + err.Error() + ")"
	}
	for _, a := range all { // newest first
		if a.Action != action {
			continue
		}
		one, err := instanceactions.Get(ctx, d.compute, serverID, a.RequestID).Extract()
		if err != nil {
			return "(its " + action + " action could not be read: " + err.Error() + ")"
		}
		if one.Events != nil {
			for _, e := range *one.Events {
				if e.Result == "Error" {
					lines := strings.Split(strings.TrimSpace(e.Traceback), "\n")
					return e.Event + ": " + strings.TrimSpace(lines[len(lines)-1])
				}
			}
		}
		return "(its " + action + " action recorded no failed event; see nova-compute's log)"
	}
	return "(no " + action + " action recorded)"
}
