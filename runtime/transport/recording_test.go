package transport

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestRecordingRecords(t *testing.T) {
	errLost := errors.New("connection lost")
	r := &Recording{Respond: func(line string) Response {
		switch line {
		case "hostname":
			return Response{Stdout: "web1\n"}
		case "false":
			return Response{Stderr: "nope\n", Code: 1}
		case "lost":
			return Response{Err: errLost}
		}
		return Response{}
	}}
	ctx := context.Background()
	var out, errOut bytes.Buffer
	if res, err := r.Run(ctx, Command{Line: "hostname", Stdout: &out}); err != nil || res.Code != 0 {
		t.Fatalf("hostname: %+v, %v", res, err)
	}
	if res, err := r.Run(ctx, Command{Line: "false", Stderr: &errOut}); err != nil || res.Code != 1 {
		t.Fatalf("false: %+v, %v", res, err)
	}
	if _, err := r.Run(ctx, Command{Line: "lost"}); !errors.Is(err, errLost) {
		t.Fatalf("lost: %v", err)
	}
	if _, err := r.Run(ctx, Command{Line: "cat > f", Stdin: strings.NewReader("12345")}); err != nil {
		t.Fatal(err)
	}
	if out.String() != "web1\n" || errOut.String() != "nope\n" {
		t.Errorf("stdout %q, stderr %q", out.String(), errOut.String())
	}
	var got []string
	for _, c := range r.Commands() {
		got = append(got, c.Line)
	}
	if want := []string{"hostname", "false", "lost", "cat > f"}; strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("lines = %q, want %q", got, want)
	}
	if n := r.Commands()[3].Stdin; n != 5 {
		t.Errorf("stdin bytes = %d, want 5", n)
	}
	if r.Lines() != "hostname\nfalse\nlost\ncat > f\n" {
		t.Errorf("Lines() = %q", r.Lines())
	}
}

func TestRecordingDelayCancelAndTimeout(t *testing.T) {
	r := &Recording{Respond: func(string) Response { return Response{Delay: time.Hour} }}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := r.Run(ctx, Command{Line: "slow"}); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v, want context.Canceled", err)
	}
	if _, err := r.Run(context.Background(), Command{Line: "slow", Timeout: time.Millisecond}); !errors.Is(err, ErrTimeout) {
		t.Errorf("timeout: %v, want ErrTimeout", err)
	}
	if n := len(r.Commands()); n != 2 {
		t.Errorf("recorded %d commands, want 2", n)
	}
}
