package nsemu

import (
	"encoding/base64"
	"errors"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	pb "github.com/swamp-club/nsdriver/nsemu/gen/namespace/cloud/compute/v1beta"
)

// strictJSON is the protojson codec with unknown fields rejected, unlike
// connect-go's default: a misspelled field must fail here, not be dropped.
type strictJSON struct{ name string }

func (c strictJSON) Name() string { return c.name }

func (c strictJSON) Marshal(msg any) ([]byte, error) {
	m, ok := msg.(proto.Message)
	if !ok {
		return nil, errors.New("strictJSON: not a proto message")
	}
	if out, ok := msg.(*pb.RunCommandResponse); ok && out.ExitStatus == nil && len(out.Data) > 0 &&
		out.Stream != 0 && len(out.ProtoReflect().GetUnknown()) == 0 {
		return outputChunkJSON(out), nil
	}
	return protojson.Marshal(m)
}

// outputChunkJSON is protojson's encoding of an output chunk, written
// directly: the stream of command output is nearly all such messages, and
// protojson spent five times the CPU on them (which made benchmarks of
// large output measure the emulator instead of the driver).
func outputChunkJSON(out *pb.RunCommandResponse) []byte {
	stream := out.Stream.String()
	b := make([]byte, 0, len(`{"stream":"","data":""}`)+len(stream)+base64.StdEncoding.EncodedLen(len(out.Data)))
	b = append(b, `{"stream":"`...)
	b = append(b, stream...)
	b = append(b, `","data":"`...)
	b = base64.StdEncoding.AppendEncode(b, out.Data)
	return append(b, `"}`...)
}

func (c strictJSON) Unmarshal(data []byte, msg any) error {
	m, ok := msg.(proto.Message)
	if !ok {
		return errors.New("strictJSON: not a proto message")
	}
	if len(data) == 0 {
		data = []byte("{}")
	}
	if err := (protojson.UnmarshalOptions{}).Unmarshal(data, m); err != nil {
		return connect.NewError(connect.CodeInvalidArgument, err)
	}
	return nil
}
