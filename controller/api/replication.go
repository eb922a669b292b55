package api

import (
	"strata/controller/instances"
)

// replicationView adds Trove's replica_of (on a replica) and replicas (on
// a source) to an instance's detailed view.
func (s *Server) replicationView(c *call, in instances.Instance, out map[string]any) {
	if l, ok, err := instances.LinkOf(c.ctx(), s.DB, in.ID); err == nil && ok {
		out["replica_of"] = map[string]any{"id": l.SourceID, "links": c.links("/instances/" + l.SourceID)}
	}
	if list, err := instances.ReplicasOf(c.ctx(), s.DB, in.ID); err == nil && len(list) > 0 {
		replicas := make([]map[string]any, 0, len(list))
		for _, l := range list {
			replicas = append(replicas, map[string]any{"id": l.InstanceID, "links": c.links("/instances/" + l.InstanceID)})
		}
		out["replicas"] = replicas
	}
}
