package nsemu

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"connectrpc.com/connect"

	pb "github.com/swamp-club/nsdriver/nsemu/gen/namespace/cloud/compute/v1beta"
)

// bootWith creates an instance of one container and waits for its boot;
// it returns the wait's error and the instance's description after it.
func (h *harness) bootWith(t *testing.T, ctr *pb.ContainerRequest) (*pb.DescribeInstanceResponse, error) {
	t.Helper()
	ctx := context.Background()
	req := createReq()
	req.Containers = []*pb.ContainerRequest{ctr}
	created, err := h.compute.CreateInstance(ctx, authed(h, req))
	if err != nil {
		t.Fatal(err)
	}
	id := created.Msg.Metadata.InstanceId
	_, waitErr := h.compute.WaitInstanceSync(ctx, authed(h, &pb.WaitInstanceRequest{InstanceId: id}))
	desc, err := h.compute.DescribeInstance(ctx, authed(h, &pb.DescribeInstanceRequest{InstanceId: id}))
	if err != nil {
		t.Fatal(err)
	}
	return desc.Msg, waitErr
}

func TestBootFailuresSayWhy(t *testing.T) {
	h := start(t, Options{ExitingEntrypoints: []string{"example.com/exits:1"}})
	cases := []struct {
		name   string
		ctr    *pb.ContainerRequest
		reason string // "" : boots
	}{
		{"unpullable image", &pb.ContainerRequest{Name: "c", ImageRef: "registry.invalid/nope:1", Entrypoint: []string{"sleep", "infinity"}},
			`failed to pull image "registry.invalid/nope:1": manifest unknown`},
		{"own entrypoint exits", &pb.ContainerRequest{Name: "c", ImageRef: "example.com/exits:1", Args: []string{"sleep", "infinity"}},
			`container "c" exited with code 0 before the instance was ready`},
		{"entrypoint override stays up", &pb.ContainerRequest{Name: "c", ImageRef: "example.com/exits:1", Entrypoint: []string{"sleep", "infinity"}}, ""},
		{"builtin image with args", &pb.ContainerRequest{Name: "c", KnownImageId: "builtin:base", Args: []string{"sleep", "infinity"}}, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			desc, waitErr := h.bootWith(t, tc.ctr)
			if tc.reason == "" {
				if waitErr != nil || desc.Metadata.Status != pb.InstanceMetadata_RUNNING || len(desc.ShutdownReasons) != 0 {
					t.Fatalf("wait %v, status %v, reasons %v", waitErr, desc.Metadata.Status, desc.ShutdownReasons)
				}
				return
			}
			if code(waitErr) != connect.CodeInternal || desc.Metadata.Status != pb.InstanceMetadata_ERROR {
				t.Fatalf("wait %v, status %v", waitErr, desc.Metadata.Status)
			}
			if len(desc.ShutdownReasons) != 1 || desc.ShutdownReasons[0].ErrorMessage != tc.reason ||
				desc.ShutdownReasons[0].ContainerName != "c" || desc.ShutdownReasons[0].ContainerNscId == "" {
				t.Fatalf("reasons %v", desc.ShutdownReasons)
			}
		})
	}
}

// Every field of the real schema is accepted (here the ones the old,
// hand-reconstructed schema lacked); an unknown one still is not.
func TestRealSchemaFieldsAccepted(t *testing.T) {
	h := start(t, Options{})
	body := `{"shape":{"virtualCpu":2,"memoryMegabytes":4096,"machineArch":"amd64","os":"linux"},
		"containers":[{"name":"c","imageRef":"example.com/x:1","entrypoint":["sleep","infinity"],"nscBinsPath":"/nsc","secretsPath":"/s"}],
		"workloadPermissions":[],"ingressBaseDomain":"example.com"}`
	for _, tc := range []struct {
		body string
		code int
	}{{body, http.StatusOK}, {strings.Replace(body, `"nscBinsPath"`, `"nscBinPath"`, 1), http.StatusBadRequest}} {
		req, _ := http.NewRequest("POST", h.srv.URL()+"/namespace.cloud.compute.v1beta.ComputeService/CreateInstance", strings.NewReader(tc.body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+h.token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.code {
			t.Fatalf("status %d, want %d for %s", resp.StatusCode, tc.code, tc.body)
		}
	}
}
