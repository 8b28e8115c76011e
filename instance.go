package nsdriver

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"regexp"
	"strings"
	"time"
)

// The instance lifecycle shared by executions, the warm pool and fleets:
// create, wait, destroy, labels, cost.

const (
	labelPrefix     = "nsdriver/"
	containerName   = "nsdriver"
	costPerUnitMin  = 0.0015
	purposeTemplate = "nsdriver: %s %s"
)

// instances creates and destroys the VMs of one Driver (or Fleet).
type instances struct {
	client *Client
	cfg    Config // shape, arch, region, duration, bare, extra labels
	logger *slog.Logger
	// newID and now are randomID and time.Now; fixture recordings replace
	// them so that what goes over the wire repeats byte for byte.
	newID func() string
	now   func() time.Time
	// destroyCap bounds a destroy's retries, and the search for an
	// instance whose create had an unknown outcome.
	destroyCap time.Duration
}

// instance is one created VM.
type instance struct {
	*DescribeInstanceResponse
	// created is when its CreateInstance was sent: its cost counts from then.
	created time.Time
}

// create asks for an instance of the configured shape with one long-lived
// container for commands to run in. It returns at once, before the boot.
// When the outcome is unknown (the response was lost), whatever the call
// may have created is found by its create-id label and destroyed.
func (m *instances) create(ctx context.Context, image string, labels []Label) (*instance, error) {
	cfg := m.cfg
	vcpu, gb := cfg.shape()
	// The container must outlive every command: if it exits, the instance
	// fails. A builtin image takes the command as args (as Namespace's
	// engineers start builtin:base); any other image's own ENTRYPOINT might
	// treat args differently and exit, so it is replaced.
	ctr := ContainerRequest{Name: containerName}
	if strings.HasPrefix(image, "builtin:") {
		ctr.KnownImageID, ctr.Args = image, []string{"sleep", "infinity"}
	} else {
		ctr.ImageRef, ctr.Entrypoint = image, []string{"sleep", "infinity"}
	}
	createID := m.newID()
	all := append([]Label{
		{Name: labelPrefix + "managed-by", Value: "nsdriver"},
		{Name: labelPrefix + "create-id", Value: createID},
	}, labels...)
	for _, k := range sortedKeys(cfg.Labels) {
		all = append(all, Label{Name: k, Value: cfg.Labels[k]})
	}
	req := &CreateInstanceRequest{
		Shape:             &InstanceShape{VirtualCPU: int32(vcpu), MemoryMegabytes: int32(gb * 1024), MachineArch: cfg.Arch, OS: "linux"},
		DocumentedPurpose: purpose(all),
		Labels:            all,
		Deadline:          NewTimestamp(m.now().Add(time.Duration(cfg.Duration))),
		Containers:        []ContainerRequest{ctr},
	}
	if !*cfg.Bare {
		req.Features = []string{FeatureKubernetes}
	}
	m.logger.Info("creating instance", "machineType", cfg.MachineType, "arch", cfg.Arch, "region", m.client.Region(), "image", image)
	created := time.Now()
	resp, err := m.client.CreateInstance(ctx, req)
	if err != nil {
		if outcomeUnknown(err) {
			m.reclaim(ctx, createID)
		}
		return nil, fmt.Errorf("creating the instance: %w", err)
	}
	return &instance{DescribeInstanceResponse: resp, created: created}, nil
}

// outcomeUnknown reports whether a failed CreateInstance may have created
// an instance all the same: the request left, but no answer came back.
func outcomeUnknown(err error) bool {
	var apiErr *APIError
	if errors.As(err, &apiErr) || neverSent(err) || errors.Is(err, ErrInsecureEndpoint) {
		return false
	}
	return errors.Is(err, ErrUnreachable) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

// reclaim finds the instance a CreateInstance with an unknown outcome may
// have made, by its create-id label, and destroys it. The create may
// commit late, so the lookup repeats until destroyCap.
func (m *instances) reclaim(ctx context.Context, createID string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), m.destroyCap)
	defer cancel()
	filter := &ListInstancesRequest{LabelFilter: []LabelFilterEntry{{Name: labelPrefix + "create-id", Value: createID, Op: LabelFilterEqual}}}
	m.logger.Warn("the create's outcome is unknown; looking for the instance it may have made", "createId", createID)
	for attempt := 0; ; attempt++ {
		found, err := m.client.ListAllInstances(ctx, filter)
		if err == nil && len(found) > 0 {
			for _, meta := range found {
				if !meta.Status.Gone() {
					m.destroy(ctx, meta.InstanceID)
				}
			}
			return
		}
		if !sleepCtx(ctx, m.client.t.retry.persistentBackoff(attempt)) {
			m.logger.Info("no instance of the lost create turned up", "createId", createID)
			return
		}
	}
}

// wait streams the instance's status until it is RUNNING. When the boot
// fails, the instance is described to say why (a *BootError).
func (m *instances) wait(ctx context.Context, inst *instance) error {
	id := inst.InstanceID()
	_, err := m.client.WaitInstance(ctx, &WaitInstanceRequest{InstanceID: id}, func(u *WaitInstanceResponse) {
		if u.Metadata != nil {
			m.logger.Debug("instance status", "instance", id, "status", u.Metadata.Status)
		}
	})
	if err == nil {
		return nil
	}
	if ctx.Err() != nil || CodeOf(err) != CodeInternal {
		return fmt.Errorf("waiting for instance %s to boot: %w", id, err)
	}
	bootErr := &BootError{InstanceID: id, Err: err}
	if desc, derr := m.client.DescribeInstance(ctx, &DescribeInstanceRequest{InstanceID: id}); derr == nil {
		bootErr.Reasons = desc.ShutdownReasons
	}
	return bootErr
}

// destroy destroys an instance on a context detached from the caller's
// cancellation; the client retries transient failures until destroyCap.
// It reports whether the instance is gone.
func (m *instances) destroy(ctx context.Context, id string) bool {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), m.destroyCap)
	defer cancel()
	err := m.client.DestroyInstance(ctx, &DestroyInstanceRequest{InstanceID: id, Reason: "nsdriver: execution finished"})
	if err == nil || errors.Is(err, ErrNotFound) {
		m.logger.Info("instance destroyed", "instance", id)
		return true
	}
	m.logger.Error("could not destroy the instance; it dies at its deadline, or run `nsdriver cleanup`", "instance", id, "error", err)
	return false
}

// renew moves an instance's deadline to now + duration, as if it had just
// been created.
func (m *instances) renew(ctx context.Context, id string) error {
	_, err := m.client.ExtendInstance(ctx, &ExtendInstanceRequest{InstanceID: id,
		NewDeadline: NewTimestamp(m.now().Add(time.Duration(m.cfg.Duration)))})
	return err
}

// cost is what an instance of the configured shape has cost from created
// until now: unit minutes and their estimated price. The emulator charges
// nothing: its price is 0, while unitMinutes says what Namespace would count.
func (m *instances) cost(created time.Time) (unitMinutes, usd float64) {
	vcpu, gb := m.cfg.shape()
	unit := math.Max(float64(vcpu), float64(gb)/2) * time.Since(created).Seconds() / 60
	if m.client != nil && m.client.Emulated() {
		return math.Round(unit*1e6) / 1e6, 0
	}
	return math.Round(unit*1e6) / 1e6, math.Round(unit*costPerUnitMin*1e9) / 1e9
}

// purpose says what the instance is for, in the words its labels give.
func purpose(labels []Label) string {
	switch {
	case labelValue(labels, "fleet") != "":
		return "nsdriver: fleet " + labelValue(labels, "fleet")
	case labelValue(labels, "pool") != "":
		return "nsdriver: warm pool"
	}
	return fmt.Sprintf(purposeTemplate, labelValue(labels, "model-type"), labelValue(labels, "method"))
}

func labelValue(labels []Label, suffix string) string {
	for _, l := range labels {
		if l.Name == labelPrefix+suffix {
			return l.Value
		}
	}
	return ""
}

var labelUnsafe = regexp.MustCompile(`[^a-z0-9._-]+`)

// sanitizeLabel lowercases s, replaces runs of other characters with "-"
// and keeps at most 63 characters.
func sanitizeLabel(s string) string {
	s = labelUnsafe.ReplaceAllString(strings.ToLower(s), "-")
	if len(s) > 63 {
		s = s[:63]
	}
	return s
}

func randomID() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
