package nsemu

import (
	"context"
	"strconv"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	pb "github.com/swamp-club/nsdriver/nsemu/gen/namespace/cloud/compute/v1beta"
	stdlib "github.com/swamp-club/nsdriver/nsemu/gen/namespace/stdlib"
)

// Listing instances: ListInstances for clients, Instances and LiveInstances
// for tests.

// InstanceInfo is an instance as Instances reports it.
type InstanceInfo struct {
	ID       string
	Status   string
	Labels   map[string]string
	Deadline time.Time
	// Spec is the CreateInstance request as stored, in protojson: what
	// anyone who can describe the instance may read.
	Spec string
}

// Instances lists every instance the emulator still knows of.
func (s *Server) Instances() []InstanceInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []InstanceInfo
	for _, id := range s.order {
		inst, ok := s.instances[id]
		if !ok {
			continue
		}
		labels := map[string]string{}
		for _, l := range inst.meta.Labels {
			labels[l.Name] = l.Value
		}
		out = append(out, InstanceInfo{ID: id, Status: inst.meta.Status.String(), Labels: labels, Deadline: inst.meta.Deadline.AsTime(), Spec: inst.spec})
	}
	return out
}

// LiveInstances returns the ids of instances that are not being or have not
// been destroyed.
func (s *Server) LiveInstances() []string {
	var ids []string
	for _, inst := range s.Instances() {
		if inst.Status != pb.InstanceMetadata_DESTROYING.String() && inst.Status != pb.InstanceMetadata_DESTROYED.String() {
			ids = append(ids, inst.ID)
		}
	}
	return ids
}

func (c *computeService) ListInstances(ctx context.Context, req *connect.Request[pb.ListInstancesRequest]) (*connect.Response[pb.ListInstancesResponse], error) {
	s := c.s
	m := req.Msg
	start := 0
	if len(m.PaginationCursor) > 0 {
		n, err := strconv.Atoi(string(m.PaginationCursor))
		if err != nil || n < 0 {
			return nil, invalid("pagination_cursor is not one this server issued")
		}
		start = n
	}
	limit := int(m.MaxEntries)
	if limit <= 0 {
		limit = 100
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	resp := &pb.ListInstancesResponse{}
	var matched []*pb.InstanceMetadata
	for _, id := range s.order {
		inst := s.instances[id]
		if inst == nil || (!m.IncludeCompleteRuns && gone(inst.meta.Status)) {
			continue
		}
		if m.NotOlderThan != nil && inst.meta.CreatedAt.AsTime().Before(m.NotOlderThan.AsTime()) {
			continue
		}
		if matchLabels(inst.meta.Labels, m.LabelFilter) {
			matched = append(matched, inst.meta)
		}
	}
	for i := start; i < len(matched) && i < start+limit; i++ {
		resp.Instances = append(resp.Instances, proto.Clone(matched[i]).(*pb.InstanceMetadata))
	}
	if start+limit < len(matched) {
		resp.PaginationCursor = []byte(strconv.Itoa(start + limit))
	}
	return connect.NewResponse(resp), nil
}

func matchLabels(labels []*stdlib.Label, filters []*stdlib.LabelFilterEntry) bool {
	for _, f := range filters {
		var value string
		found := false
		for _, l := range labels {
			if l.Name == f.Name {
				value, found = l.Value, true
			}
		}
		switch f.Op {
		case stdlib.LabelFilterEntry_EQUAL, stdlib.LabelFilterEntry_UNKNOWN:
			if !found || value != f.Value {
				return false
			}
		case stdlib.LabelFilterEntry_NOT_EQUAL:
			if found && value == f.Value {
				return false
			}
		case stdlib.LabelFilterEntry_EXIST:
			if !found {
				return false
			}
		}
	}
	return true
}
