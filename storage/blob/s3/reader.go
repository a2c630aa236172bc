package s3

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/aws/aws-sdk-go-v2/aws"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"
)

// maxReopens bounds how often a read of an object asks again for the rest
// after its response broke off.
const maxReopens = 2

// readBuffer is the most a read of an object's response asks of the
// connection at once.
const readBuffer = 256 << 10

// object reads an object of known size from where it is positioned. It
// asks for the content only when read, from its position to the end (a
// ranged GET, on the version it was opened at), and asks again after a
// Seek elsewhere or a response that broke off.
type object struct {
	s    *Store
	ctx  context.Context
	key  string
	what string
	size int64
	etag string

	pos     int64         // where the next Read reads
	body    io.ReadCloser // the response being read, if any
	buf     *bufio.Reader // reads body, in large reads
	bodyPos int64         // where body stands
	reopens int           // responses asked for again after breaking off
}

// Read implements io.Reader.
func (o *object) Read(p []byte) (int, error) {
	if o.pos >= o.size {
		return 0, io.EOF
	}
	if len(p) == 0 {
		return 0, nil
	}
	if o.body != nil && o.bodyPos != o.pos {
		o.closeBody()
	}
	if o.body == nil {
		if err := o.open(); err != nil {
			return 0, err
		}
	}
	n, err := o.buf.Read(p)
	o.pos += int64(n)
	o.bodyPos += int64(n)
	switch {
	case err == nil:
		return n, nil
	case errors.Is(err, io.EOF) && o.pos >= o.size:
		o.closeBody()
		return n, io.EOF
	}
	// The response ended early or broke off: ask for the rest, a few
	// times, unless the reader's context is done.
	o.closeBody()
	if errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	if o.ctx.Err() != nil || o.reopens >= maxReopens {
		if n > 0 {
			return n, nil // the error comes again with the next Read
		}
		return 0, failed(fmt.Sprintf("read %s at %d", o.what, o.pos), err)
	}
	o.reopens++
	o.s.log.DebugContext(o.ctx, "reading an object again after its response broke off", "key", o.key, "offset", o.pos, "error", err)
	return n, nil
}

// open asks for the content from o.pos to the end.
func (o *object) open() error {
	in := &awss3.GetObjectInput{Bucket: &o.s.bucket, Key: &o.key}
	if o.pos > 0 {
		in.Range = aws.String(fmt.Sprintf("bytes=%d-", o.pos))
	}
	if o.etag != "" {
		in.IfMatch = &o.etag
	}
	out, err := o.s.client.GetObject(o.ctx, in)
	if err != nil {
		return failed(fmt.Sprintf("read %s from %d", o.what, o.pos), err)
	}
	o.body, o.bodyPos = out.Body, o.pos
	// Reads of the connection as large as what has arrived, up to
	// readBuffer, rather than as small as the caller's (net/http copies
	// a response in 32 KiB reads): a pull makes fewer system calls.
	o.buf = bufio.NewReaderSize(o.body, int(min(readBuffer, max(o.size-o.pos, 16))))
	return nil
}

func (o *object) closeBody() {
	if o.body != nil {
		_ = o.body.Close()
		o.body, o.buf = nil, nil
	}
}

// Seek implements io.Seeker; it asks for nothing.
func (o *object) Seek(offset int64, whence int) (int64, error) {
	var abs int64
	switch whence {
	case io.SeekStart:
		abs = offset
	case io.SeekCurrent:
		abs = o.pos + offset
	case io.SeekEnd:
		abs = o.size + offset
	default:
		return 0, fmt.Errorf("seek %s: invalid whence %d", o.what, whence)
	}
	if abs < 0 {
		return 0, fmt.Errorf("seek %s: negative position %d", o.what, abs)
	}
	o.pos = abs
	return abs, nil
}

// Streaming reports that WriteTo serves a whole GET better than small
// reads do (see distribution.Streamer).
func (o *object) Streaming() bool { return true }

// WriteTo writes the content from the position to the end to w, in reads
// and writes of up to readBuffer bytes.
func (o *object) WriteTo(w io.Writer) (int64, error) {
	buf := make([]byte, min(readBuffer, max(o.size-o.pos, 1)))
	var total int64
	for {
		n, err := o.Read(buf)
		if n > 0 {
			m, werr := w.Write(buf[:n])
			total += int64(m)
			if werr != nil {
				return total, werr
			}
		}
		if errors.Is(err, io.EOF) {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}

// Close implements io.Closer.
func (o *object) Close() error {
	o.closeBody()
	return nil
}

// pieces reads the pieces of content in flight one after the other, each
// asked for when the one before it ends.
type pieces struct {
	s    *Store
	ctx  context.Context
	dir  string
	what string
	list []piece
	body io.ReadCloser
	left int64 // bytes the current piece still owes
}

// Read implements io.Reader.
func (r *pieces) Read(p []byte) (int, error) {
	for r.body == nil {
		if len(r.list) == 0 {
			return 0, io.EOF
		}
		pc := r.list[0]
		r.list = r.list[1:]
		if pc.Size == 0 {
			continue
		}
		out, err := r.s.client.GetObject(r.ctx, &awss3.GetObjectInput{Bucket: &r.s.bucket, Key: aws.String(r.dir + pc.Name)})
		if err != nil {
			return 0, failed(fmt.Sprintf("read piece %s of %s", pc.Name, r.what), err)
		}
		r.body, r.left = out.Body, pc.Size
	}
	if int64(len(p)) > r.left {
		p = p[:r.left]
	}
	n, err := r.body.Read(p)
	r.left -= int64(n)
	if r.left == 0 {
		_ = r.body.Close()
		r.body = nil
		return n, nil
	}
	if errors.Is(err, io.EOF) {
		return n, fmt.Errorf("read %s: a piece is %d bytes shorter than its state says: %w", r.what, r.left, io.ErrUnexpectedEOF)
	}
	if err != nil {
		return n, failed("read "+r.what, err)
	}
	return n, nil
}

// Close implements io.Closer.
func (r *pieces) Close() error {
	if r.body != nil {
		_ = r.body.Close()
		r.body = nil
	}
	r.list = nil
	return nil
}
