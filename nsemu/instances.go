package nsemu

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/swamp-club/nsdriver/nsemu/gen/namespace/cloud/compute/v1beta"
	"github.com/swamp-club/nsdriver/nsemu/gen/namespace/cloud/compute/v1beta/computev1betaconnect"
)

type instance struct {
	meta       *pb.InstanceMetadata // owned; copied out under s.mu
	containers []*container
	spec       string // the CreateInstance request, protojson
	// shutdown says why the instance failed to boot (DescribeInstance).
	shutdown []*pb.DescribeInstanceResponse_ShutdownReason
	dir      string
	procs    map[*process]struct{}
	changed  chan struct{} // closed and replaced on every status change
	deadline *time.Timer
}

type container struct {
	id, name, image, path, dir string
	env                        []string
}

func gone(st pb.InstanceMetadata_Status) bool {
	return st == pb.InstanceMetadata_DESTROYING || st == pb.InstanceMetadata_DESTROYED
}

// setStatus moves an instance on and wakes its waiters; callers hold s.mu.
func (inst *instance) setStatus(st pb.InstanceMetadata_Status) {
	inst.meta.Status = st
	close(inst.changed)
	inst.changed = make(chan struct{})
}

type computeService struct {
	computev1betaconnect.UnimplementedComputeServiceHandler
	s *Server
}

var (
	validVCPU  = []int32{2, 4, 8, 16, 32}
	labelChars = regexp.MustCompile(`^[a-z0-9./_-]{1,63}$`)
	valueChars = regexp.MustCompile(`^[a-z0-9./_-]{0,63}$`)
)

func invalid(format string, args ...any) error {
	return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf(format, args...))
}

func validateCreate(req *pb.CreateInstanceRequest, now time.Time) error {
	shape := req.GetShape()
	if shape == nil {
		return invalid("shape is required")
	}
	if !slices.Contains(validVCPU, shape.VirtualCpu) {
		return invalid("shape.virtual_cpu %d is not one of 2, 4, 8, 16, 32", shape.VirtualCpu)
	}
	gb := shape.MemoryMegabytes / 1024
	if shape.MemoryMegabytes%1024 != 0 || gb < 2 || gb > 512 || gb&(gb-1) != 0 {
		return invalid("shape.memory_megabytes %d is not a power-of-two number of GB from 2 to 512, times 1024", shape.MemoryMegabytes)
	}
	if a := shape.MachineArch; a != "amd64" && a != "arm64" {
		return invalid("shape.machine_arch %q is not amd64 or arm64", a)
	}
	if o := shape.Os; o != "" && o != "linux" {
		return invalid("shape.os %q is not supported by nsemu (linux only)", o)
	}
	if req.Deadline != nil && !req.Deadline.AsTime().After(now) {
		return invalid("deadline %s is not in the future", req.Deadline.AsTime().Format(time.RFC3339))
	}
	for _, l := range req.Labels {
		if !labelChars.MatchString(l.Name) || !valueChars.MatchString(l.Value) {
			return invalid("label %q=%q: names and values take [a-z0-9./_-], at most 63 characters", l.Name, l.Value)
		}
	}
	for _, f := range req.Features {
		if f == pb.CreateInstanceRequest_FEATURE_UNKNOWN {
			return invalid("features: FEATURE_UNKNOWN is not a feature")
		}
	}
	names := map[string]bool{}
	for i, c := range req.Containers {
		if c.Name == "" {
			return invalid("containers[%d].name is required", i)
		}
		if names[c.Name] {
			return invalid("containers[%d].name %q is used twice", i, c.Name)
		}
		names[c.Name] = true
		if (c.ImageRef == "") == (c.KnownImageId == "") {
			return invalid("containers[%d] needs exactly one of image_ref and known_image_id", i)
		}
	}
	return nil
}

func (c *computeService) CreateInstance(ctx context.Context, req *connect.Request[pb.CreateInstanceRequest]) (*connect.Response[pb.DescribeInstanceResponse], error) {
	s := c.s
	now := s.now()
	if err := validateCreate(req.Msg, now); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.checkQuota(req.Msg.Shape); err != nil {
		return nil, err
	}
	id := s.newID(20)
	deadline := now.Add(s.opts.DefaultDeadline)
	if req.Msg.Deadline != nil {
		deadline = req.Msg.Deadline.AsTime()
	}
	inst := &instance{
		meta: &pb.InstanceMetadata{
			InstanceId: id, CreatedAt: timestamppb.New(now), Deadline: timestamppb.New(deadline),
			DocumentedPurpose: req.Msg.DocumentedPurpose, Shape: req.Msg.Shape,
			Status: pb.InstanceMetadata_PENDING, Labels: req.Msg.Labels, CreatorId: "nsemu",
		},
		spec:    protojson.Format(req.Msg),
		dir:     filepath.Join(s.opts.Dir, id),
		procs:   map[*process]struct{}{},
		changed: make(chan struct{}),
	}
	for _, cr := range req.Msg.Containers {
		image := cr.ImageRef + cr.KnownImageId
		path, ok := s.opts.Images[image]
		if !ok {
			path = s.opts.DefaultPath
		}
		ctr := &container{id: s.newID(12), name: cr.Name, image: image, path: path, dir: filepath.Join(inst.dir, cr.Name)}
		for k, v := range cr.Environment {
			ctr.env = append(ctr.env, k+"="+v)
		}
		slices.Sort(ctr.env)
		for _, e := range cr.EnvVars {
			ctr.env = append(ctr.env, e.Name+"="+e.Value)
		}
		for _, sub := range []string{"home", "tmp"} {
			if err := os.MkdirAll(filepath.Join(ctr.dir, sub), 0o700); err != nil {
				return nil, connect.NewError(connect.CodeInternal, err)
			}
		}
		inst.containers = append(inst.containers, ctr)
	}
	s.instances[id] = inst
	s.order = append(s.order, id)
	live := 0
	for _, other := range s.instances {
		if !gone(other.meta.Status) {
			live++
		}
	}
	s.peakLive = max(s.peakLive, live)
	s.boots++
	failure := s.bootFailure(req.Msg.Containers, inst.containers, s.matchFault("Boot", s.boots))
	s.afterFunc(0, func() {
		s.transition(id, pb.InstanceMetadata_PENDING, pb.InstanceMetadata_CREATING)
		s.mu.Lock()
		defer s.mu.Unlock()
		final := pb.InstanceMetadata_RUNNING
		if failure != nil {
			final = pb.InstanceMetadata_ERROR
		}
		s.afterFunc(s.opts.BootTime, func() {
			s.mu.Lock()
			if failure != nil && inst.meta.Status == pb.InstanceMetadata_CREATING {
				inst.shutdown = append(inst.shutdown, failure)
			}
			s.mu.Unlock()
			s.transition(id, pb.InstanceMetadata_CREATING, final)
		})
	})
	inst.deadline = s.afterFunc(deadline.Sub(now), func() { s.destroy(id) })
	return connect.NewResponse(s.describe(inst)), nil
}

// unpullableTLD marks images that can never be pulled: the .invalid
// top-level domain is reserved (RFC 2606), so no registry can serve one.
const unpullableTLD = ".invalid/"

// bootFailure decides whether a new instance's boot fails, and why, as
// Namespace reports it in shutdownReasons: an injected Boot fault, an image
// that cannot be pulled, or a managed container whose process exits (an
// image listed in Options.ExitingEntrypoints, started without an
// entrypoint override, runs its own ENTRYPOINT with the args, which ends).
func (s *Server) bootFailure(reqs []*pb.ContainerRequest, ctrs []*container, fault *Fault) *pb.DescribeInstanceResponse_ShutdownReason {
	if fault != nil {
		msg := fault.Message
		if msg == "" {
			msg = "injected boot failure"
		}
		return &pb.DescribeInstanceResponse_ShutdownReason{ErrorCode: int32(connect.CodeInternal), ErrorMessage: msg}
	}
	for i, cr := range reqs {
		reason := &pb.DescribeInstanceResponse_ShutdownReason{ContainerNscId: ctrs[i].id, ContainerName: cr.Name}
		switch {
		case strings.Contains(cr.ImageRef, unpullableTLD):
			reason.ErrorCode = int32(connect.CodeFailedPrecondition)
			reason.ErrorMessage = fmt.Sprintf("failed to pull image %q: manifest unknown", cr.ImageRef)
			reason.ContainerFailedReason = "ImagePullBackOff"
			return reason
		case cr.ImageRef != "" && len(cr.Entrypoint) == 0 && slices.Contains(s.opts.ExitingEntrypoints, cr.ImageRef):
			reason.ErrorCode = int32(connect.CodeFailedPrecondition)
			reason.ErrorMessage = fmt.Sprintf("container %q exited with code 0 before the instance was ready", cr.Name)
			reason.ContainerFailedReason = "Completed"
			return reason
		}
	}
	return nil
}

// checkQuota enforces MaxInstances and MaxVCPU; callers hold s.mu.
func (s *Server) checkQuota(shape *pb.InstanceShape) error {
	count, vcpu := 0, int32(0)
	for _, inst := range s.instances {
		if !gone(inst.meta.Status) {
			count++
			vcpu += inst.meta.Shape.VirtualCpu
		}
	}
	over := (s.opts.MaxInstances > 0 && count+1 > s.opts.MaxInstances) ||
		(s.opts.MaxVCPU > 0 && int(vcpu+shape.VirtualCpu) > s.opts.MaxVCPU)
	if !over {
		return nil
	}
	kind := pb.ResourceLimitsError_INSTANCE_COUNT_LIMIT
	if s.opts.MaxInstances == 0 || count+1 <= s.opts.MaxInstances {
		kind = pb.ResourceLimitsError_CPU_MEMORY_LIMIT
	}
	err := connect.NewError(connect.CodeResourceExhausted, errors.New("workspace resource limits reached"))
	detail, _ := connect.NewErrorDetail(&pb.ResourceLimitsError{
		Description: "nsemu quota", Kind: kind,
		Requested: &pb.ResourceLimitsError_Resource{VirtualCpu: shape.VirtualCpu, MemoryMegabytes: shape.MemoryMegabytes, InstanceCount: 1},
		Used:      &pb.ResourceLimitsError_Resource{VirtualCpu: vcpu, InstanceCount: int32(count)},
		Limits:    &pb.ResourceLimitsError_Resource{VirtualCpu: int32(s.opts.MaxVCPU), InstanceCount: int32(s.opts.MaxInstances)},
	})
	err.AddDetail(detail)
	return err
}

func (s *Server) transition(id string, from, to pb.InstanceMetadata_Status) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if inst, ok := s.instances[id]; ok && inst.meta.Status == from {
		inst.setStatus(to)
	}
}

// describe renders an instance; callers hold s.mu.
func (s *Server) describe(inst *instance) *pb.DescribeInstanceResponse {
	id := inst.meta.InstanceId
	resp := &pb.DescribeInstanceResponse{
		InstanceUrl:      s.url + "/instances/" + id,
		Metadata:         proto.Clone(inst.meta).(*pb.InstanceMetadata),
		ExtendedMetadata: &pb.InstanceExtendedMetadata{CommandServiceEndpoint: s.url + "/instances/" + id},
	}
	for _, c := range inst.containers {
		resp.Containers = append(resp.Containers, &pb.AllocatedContainer{Id: c.id, Name: c.name})
	}
	for _, r := range inst.shutdown {
		resp.ShutdownReasons = append(resp.ShutdownReasons, proto.Clone(r).(*pb.DescribeInstanceResponse_ShutdownReason))
	}
	return resp
}

func (s *Server) lookup(id string) (*instance, error) {
	if id == "" {
		return nil, invalid("instance_id is required")
	}
	inst, ok := s.instances[id]
	if !ok {
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("instance %q not found", id))
	}
	return inst, nil
}

func (c *computeService) DescribeInstance(ctx context.Context, req *connect.Request[pb.DescribeInstanceRequest]) (*connect.Response[pb.DescribeInstanceResponse], error) {
	s := c.s
	s.mu.Lock()
	defer s.mu.Unlock()
	inst, err := s.lookup(req.Msg.InstanceId)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(s.describe(inst)), nil
}

// waitRunning calls send for every status the instance passes through until
// it is RUNNING. A boot that ends in ERROR is internal.
func (s *Server) waitRunning(ctx context.Context, req *pb.WaitInstanceRequest, send func(*pb.WaitInstanceResponse) error) error {
	var lastSent pb.InstanceMetadata_Status = -1
	for {
		s.mu.Lock()
		inst, err := s.lookup(req.InstanceId)
		if err != nil {
			s.mu.Unlock()
			return err
		}
		meta := proto.Clone(inst.meta).(*pb.InstanceMetadata)
		changed := inst.changed
		s.mu.Unlock()
		if meta.Status != lastSent {
			if err := send(&pb.WaitInstanceResponse{Metadata: meta}); err != nil {
				return err
			}
			lastSent = meta.Status
		}
		switch {
		case meta.Status == pb.InstanceMetadata_RUNNING:
			return nil
		case meta.Status == pb.InstanceMetadata_ERROR:
			return connect.NewError(connect.CodeInternal, fmt.Errorf("instance %s failed to boot", meta.InstanceId))
		case gone(meta.Status) && req.DestroyedOk:
			return nil
		case gone(meta.Status):
			return connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("instance %s was destroyed", meta.InstanceId))
		}
		select {
		case <-ctx.Done():
			return connect.NewError(contextCode(ctx.Err()), ctx.Err())
		case <-changed:
		}
	}
}

func (c *computeService) WaitInstance(ctx context.Context, req *connect.Request[pb.WaitInstanceRequest], stream *connect.ServerStream[pb.WaitInstanceResponse]) error {
	return c.s.waitRunning(ctx, req.Msg, stream.Send)
}

func (c *computeService) WaitInstanceSync(ctx context.Context, req *connect.Request[pb.WaitInstanceRequest]) (*connect.Response[pb.WaitInstanceResponse], error) {
	var last *pb.WaitInstanceResponse
	err := c.s.waitRunning(ctx, req.Msg, func(r *pb.WaitInstanceResponse) error { last = r; return nil })
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(last), nil
}

func (c *computeService) DestroyInstance(ctx context.Context, req *connect.Request[pb.DestroyInstanceRequest]) (*connect.Response[emptypb.Empty], error) {
	s := c.s
	s.mu.Lock()
	_, err := s.lookup(req.Msg.InstanceId)
	s.mu.Unlock()
	if err != nil {
		return nil, err
	}
	s.destroy(req.Msg.InstanceId)
	return connect.NewResponse(&emptypb.Empty{}), nil
}

// destroy kills an instance's processes and walks it to DESTROYED, then
// forgets it after the grace period. Destroying twice is harmless.
func (s *Server) destroy(id string) {
	s.mu.Lock()
	inst, ok := s.instances[id]
	if !ok || gone(inst.meta.Status) {
		s.mu.Unlock()
		return
	}
	inst.setStatus(pb.InstanceMetadata_DESTROYING)
	inst.meta.DestroyedAt = timestamppb.New(s.now())
	if inst.deadline != nil {
		inst.deadline.Stop()
		delete(s.timers, inst.deadline)
	}
	procs := make([]*process, 0, len(inst.procs))
	for p := range inst.procs {
		procs = append(procs, p)
	}
	s.afterFunc(s.opts.DestroyTime, func() {
		s.transition(id, pb.InstanceMetadata_DESTROYING, pb.InstanceMetadata_DESTROYED)
		s.mu.Lock()
		defer s.mu.Unlock()
		s.afterFunc(s.opts.Grace, func() {
			s.mu.Lock()
			defer s.mu.Unlock()
			delete(s.instances, id)
			s.order = slices.DeleteFunc(s.order, func(x string) bool { return x == id })
			_ = os.RemoveAll(inst.dir)
		})
	})
	dir := inst.dir
	s.mu.Unlock()
	for _, p := range procs {
		p.kill()
	}
	killTagged(dir) // what left its process group
}

func (c *computeService) ExtendInstance(ctx context.Context, req *connect.Request[pb.ExtendInstanceRequest]) (*connect.Response[pb.ExtendInstanceResponse], error) {
	s := c.s
	m := req.Msg
	set := 0
	for _, present := range []bool{m.ExtendBy != nil, m.EnsureMinimum != nil, m.NewDeadline != nil} {
		if present {
			set++
		}
	}
	if set != 1 {
		return nil, invalid("set exactly one of extend_by, ensure_minimum and new_deadline")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	inst, err := s.lookup(m.InstanceId)
	if err != nil {
		return nil, err
	}
	if gone(inst.meta.Status) {
		return nil, connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("instance %s is destroyed", m.InstanceId))
	}
	now := s.now()
	deadline := inst.meta.Deadline.AsTime()
	switch {
	case m.ExtendBy != nil:
		deadline = deadline.Add(m.ExtendBy.AsDuration())
	case m.EnsureMinimum != nil:
		deadline = maxTime(deadline, now.Add(m.EnsureMinimum.AsDuration()))
	default:
		deadline = m.NewDeadline.AsTime()
	}
	if !deadline.After(now) {
		return nil, invalid("the new deadline %s is not in the future", deadline.Format(time.RFC3339))
	}
	inst.meta.Deadline = timestamppb.New(deadline)
	if inst.deadline != nil {
		inst.deadline.Stop()
		delete(s.timers, inst.deadline)
	}
	id := m.InstanceId
	inst.deadline = s.afterFunc(deadline.Sub(now), func() { s.destroy(id) })
	return connect.NewResponse(&pb.ExtendInstanceResponse{NewDeadline: inst.meta.Deadline}), nil
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
