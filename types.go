package nsdriver

import "strings"

// Request and response messages of namespace.cloud.compute.v1beta, with the
// protojson (lowerCamelCase) names of the published schema. Only the fields
// this project uses are declared; unknown response fields are ignored.

// Label is namespace.stdlib.Label.
type Label struct {
	Name  string `json:"name,omitempty"`
	Value string `json:"value,omitempty"`
}

// LabelFilterOp is namespace.stdlib.LabelFilterEntry.LabelFilterOp.
type LabelFilterOp string

// Label filter operators.
const (
	LabelFilterEqual    LabelFilterOp = "EQUAL"
	LabelFilterNotEqual LabelFilterOp = "NOT_EQUAL"
	LabelFilterExist    LabelFilterOp = "EXIST"
)

var labelFilterOpNames = map[int]string{0: "UNKNOWN", 1: "EQUAL", 2: "NOT_EQUAL", 3: "EXIST"}

// UnmarshalJSON accepts the operator's name or number.
func (o *LabelFilterOp) UnmarshalJSON(b []byte) error {
	s, err := enumJSON(b, labelFilterOpNames)
	*o = LabelFilterOp(s)
	return err
}

// LabelFilterEntry is namespace.stdlib.LabelFilterEntry.
type LabelFilterEntry struct {
	Name  string        `json:"name,omitempty"`
	Value string        `json:"value,omitempty"`
	Op    LabelFilterOp `json:"op,omitempty"`
}

// InstanceShape is the machine shape of an instance.
type InstanceShape struct {
	VirtualCPU      int32  `json:"virtualCpu,omitempty"`
	MemoryMegabytes int32  `json:"memoryMegabytes,omitempty"`
	MachineArch     string `json:"machineArch,omitempty"`
	OS              string `json:"os,omitempty"`
}

// EnvironmentVariable is one name/value pair of a container or command env.
type EnvironmentVariable struct {
	Name  string `json:"name,omitempty"`
	Value string `json:"value,omitempty"`
}

// ContainerRequest describes a container started with the instance.
type ContainerRequest struct {
	Name string `json:"name,omitempty"`
	// ImageRef is an OCI image reference; set it or KnownImageID.
	ImageRef string `json:"imageRef,omitempty"`
	// KnownImageID selects a Namespace-managed image such as "builtin:base".
	KnownImageID string `json:"knownImageId,omitempty"`
	// Entrypoint replaces the image's ENTRYPOINT; without it, Args are
	// handed to the image's own.
	Entrypoint []string              `json:"entrypoint,omitempty"`
	Args       []string              `json:"args,omitempty"`
	EnvVars    []EnvironmentVariable `json:"envVars,omitempty"`
}

// Instance features.
const FeatureKubernetes = "FEATURE_KUBERNETES"

// CreateInstanceRequest is the CreateInstance request.
type CreateInstanceRequest struct {
	Shape             *InstanceShape     `json:"shape,omitempty"`
	Features          []string           `json:"features,omitempty"`
	DocumentedPurpose string             `json:"documentedPurpose,omitempty"`
	Labels            []Label            `json:"labels,omitempty"`
	Deadline          Timestamp          `json:"deadline,omitzero"`
	Interactive       bool               `json:"interactive,omitempty"`
	Region            string             `json:"region,omitempty"`
	Containers        []ContainerRequest `json:"containers,omitempty"`
}

// InstanceStatus is InstanceMetadata.Status, always held as its name.
type InstanceStatus string

// Instance statuses.
const (
	StatusUnknown    InstanceStatus = "STATUS_UNKNOWN"
	StatusPending    InstanceStatus = "PENDING"
	StatusCreating   InstanceStatus = "CREATING"
	StatusRunning    InstanceStatus = "RUNNING"
	StatusDestroyed  InstanceStatus = "DESTROYED"
	StatusDestroying InstanceStatus = "DESTROYING"
	StatusSuspending InstanceStatus = "SUSPENDING"
	StatusSuspended  InstanceStatus = "SUSPENDED"
	StatusError      InstanceStatus = "ERROR"
)

var instanceStatusNames = map[int]string{
	0: "STATUS_UNKNOWN", 1: "PENDING", 2: "CREATING", 3: "RUNNING", 4: "DESTROYED",
	5: "DESTROYING", 6: "SUSPENDING", 7: "SUSPENDED", 8: "ERROR",
}

// UnmarshalJSON accepts the status's name or number.
func (s *InstanceStatus) UnmarshalJSON(b []byte) error {
	name, err := enumJSON(b, instanceStatusNames)
	*s = InstanceStatus(name)
	return err
}

// Gone reports whether the instance is being or has been destroyed.
func (s InstanceStatus) Gone() bool { return s == StatusDestroying || s == StatusDestroyed }

// InstanceMetadata describes one instance.
type InstanceMetadata struct {
	InstanceID        string         `json:"instanceId,omitempty"`
	CreatedAt         Timestamp      `json:"createdAt,omitzero"`
	DestroyedAt       Timestamp      `json:"destroyedAt,omitzero"`
	Deadline          Timestamp      `json:"deadline,omitzero"`
	DocumentedPurpose string         `json:"documentedPurpose,omitempty"`
	Shape             *InstanceShape `json:"shape,omitempty"`
	Status            InstanceStatus `json:"status,omitempty"`
	Labels            []Label        `json:"labels,omitempty"`
	CreatorID         string         `json:"creatorId,omitempty"`
}

// LabelValue returns the value of the named label, or "".
func (m *InstanceMetadata) LabelValue(name string) string {
	for _, l := range m.Labels {
		if l.Name == name {
			return l.Value
		}
	}
	return ""
}

// InstanceExtendedMetadata holds per-instance endpoints.
type InstanceExtendedMetadata struct {
	CommandServiceEndpoint string `json:"commandServiceEndpoint,omitempty"`
}

// AllocatedContainer is a container the instance runs.
type AllocatedContainer struct {
	ID   string `json:"id,omitempty"`
	Name string `json:"name,omitempty"`
}

// DescribeInstanceResponse is returned by CreateInstance and DescribeInstance.
type DescribeInstanceResponse struct {
	InstanceURL      string                    `json:"instanceUrl,omitempty"`
	Metadata         *InstanceMetadata         `json:"metadata,omitempty"`
	ExtendedMetadata *InstanceExtendedMetadata `json:"extendedMetadata,omitempty"`
	Containers       []AllocatedContainer      `json:"containers,omitempty"`
	// ShutdownReasons say why the instance stopped or failed to start.
	ShutdownReasons []ShutdownReason `json:"shutdownReasons,omitempty"`
}

// ShutdownReason is DescribeInstanceResponse.ShutdownReason: why an
// instance stopped or failed to start.
type ShutdownReason struct {
	ErrorCode             int32  `json:"errorCode,omitempty"`
	ErrorMessage          string `json:"errorMessage,omitempty"`
	ContainerNscID        string `json:"containerNscId,omitempty"`
	ContainerName         string `json:"containerName,omitempty"`
	ContainerFailedReason string `json:"containerFailedReason,omitempty"`
}

// String renders the reason for a person: the message, then which
// container and how it failed.
func (r ShutdownReason) String() string {
	s := r.ErrorMessage
	if s == "" {
		s = "no message"
	}
	var where []string
	if r.ContainerName != "" {
		where = append(where, "container "+r.ContainerName)
	}
	if r.ContainerFailedReason != "" {
		where = append(where, r.ContainerFailedReason)
	}
	if len(where) > 0 {
		s += " (" + strings.Join(where, ", ") + ")"
	}
	return s
}

// CommandEndpoint is the base URL of the instance's CommandService, or "".
func (r *DescribeInstanceResponse) CommandEndpoint() string {
	if r == nil || r.ExtendedMetadata == nil {
		return ""
	}
	return r.ExtendedMetadata.CommandServiceEndpoint
}

// InstanceID is the instance's id, or "".
func (r *DescribeInstanceResponse) InstanceID() string {
	if r == nil || r.Metadata == nil {
		return ""
	}
	return r.Metadata.InstanceID
}

// DescribeInstanceRequest is the DescribeInstance request.
type DescribeInstanceRequest struct {
	InstanceID string `json:"instanceId,omitempty"`
}

// WaitInstanceRequest is the WaitInstance and WaitInstanceSync request.
type WaitInstanceRequest struct {
	InstanceID  string `json:"instanceId,omitempty"`
	DestroyedOK bool   `json:"destroyedOk,omitempty"`
	ContainerID string `json:"containerId,omitempty"`
}

// WaitInstanceResponse is one status update of a waiting instance.
type WaitInstanceResponse struct {
	Metadata        *InstanceMetadata `json:"metadata,omitempty"`
	ContainerStatus string            `json:"containerStatus,omitempty"`
}

// ExtendInstanceRequest moves an instance's deadline. Set exactly one of
// ExtendBy, EnsureMinimum or NewDeadline; only the last two are idempotent
// and therefore retried.
type ExtendInstanceRequest struct {
	InstanceID    string        `json:"instanceId,omitempty"`
	ExtendBy      ProtoDuration `json:"extendBy,omitzero"`
	EnsureMinimum ProtoDuration `json:"ensureMinimum,omitzero"`
	NewDeadline   Timestamp     `json:"newDeadline,omitzero"`
}

// ExtendInstanceResponse carries the instance's new deadline.
type ExtendInstanceResponse struct {
	NewDeadline Timestamp `json:"newDeadline,omitzero"`
}

// DestroyInstanceRequest is the DestroyInstance request.
type DestroyInstanceRequest struct {
	InstanceID string `json:"instanceId,omitempty"`
	Reason     string `json:"reason,omitempty"`
}

// ListInstancesRequest is the ListInstances request.
type ListInstancesRequest struct {
	PaginationCursor    Bytes              `json:"paginationCursor,omitempty"`
	MaxEntries          Int64              `json:"maxEntries,omitempty"`
	IncludeCompleteRuns bool               `json:"includeCompleteRuns,omitempty"`
	NotOlderThan        Timestamp          `json:"notOlderThan,omitzero"`
	LabelFilter         []LabelFilterEntry `json:"labelFilter,omitempty"`
}

// ListInstancesResponse is one page of instances.
type ListInstancesResponse struct {
	Instances        []InstanceMetadata `json:"instances,omitempty"`
	PaginationCursor Bytes              `json:"paginationCursor,omitempty"`
}

// Command is what RunCommand executes: an argv, extra environment and a
// working directory.
type Command struct {
	Command []string              `json:"command,omitempty"`
	EnvVars []EnvironmentVariable `json:"envVars,omitempty"`
	Cwd     string                `json:"cwd,omitempty"`
}

// RunCommandRequest is the RunCommand and RunCommandSync request.
type RunCommandRequest struct {
	InstanceID          string   `json:"instanceId,omitempty"`
	TargetContainerName string   `json:"targetContainerName,omitempty"`
	Command             *Command `json:"command,omitempty"`
}

// jsonSizeHint is about the size of r's JSON: an upload's argv is most of
// a megabyte, and encoding it into a buffer grown as it goes copied it
// several times.
func (r *RunCommandRequest) jsonSizeHint() int {
	n := 128 + len(r.InstanceID) + len(r.TargetContainerName)
	if r.Command != nil {
		for _, a := range r.Command.Command {
			n += len(a) + 3
		}
		for _, e := range r.Command.EnvVars {
			n += len(e.Name) + len(e.Value) + 24
		}
	}
	return n
}

// OutputStream names which stream a chunk of command output came from.
type OutputStream string

// Output streams.
const (
	StreamStdout OutputStream = "STDOUT"
	StreamStderr OutputStream = "STDERR"
)

var outputStreamNames = map[int]string{0: "STREAM_UNKNOWN", 1: "STDOUT", 2: "STDERR"}

// UnmarshalJSON accepts the stream's name or number.
func (s *OutputStream) UnmarshalJSON(b []byte) error {
	name, err := enumJSON(b, outputStreamNames)
	*s = OutputStream(name)
	return err
}

// RunCommandResponse is one message of a RunCommand stream.
type RunCommandResponse struct {
	Stream     OutputStream `json:"stream,omitempty"`
	Data       Bytes        `json:"data,omitempty"`
	ExitStatus *ExitStatus  `json:"exitStatus,omitempty"`
}

// ExitStatus ends a RunCommand stream.
type ExitStatus struct {
	ExitCode int32 `json:"exitCode,omitempty"`
}

// RunCommandSyncResponse is the whole output of a command.
type RunCommandSyncResponse struct {
	Stdout   Bytes `json:"stdout,omitempty"`
	Stderr   Bytes `json:"stderr,omitempty"`
	ExitCode int32 `json:"exitCode,omitempty"`
}
