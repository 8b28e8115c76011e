package nsemu

import (
	"errors"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
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
	return protojson.Marshal(m)
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
