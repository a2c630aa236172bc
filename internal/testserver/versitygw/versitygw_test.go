package versitygw

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"
)

var gw = New()

func TestMain(m *testing.M) { os.Exit(gw.Run(m)) }

// TestBucketsAreFreshAndSeparate: each test's bucket is empty and its
// own, the server answers on loopback only, and objects land under the
// temporary directory.
func TestBucketsAreFreshAndSeparate(t *testing.T) {
	a, b := gw.Bucket(t), gw.Bucket(t)
	if a.Name == b.Name {
		t.Fatalf("two buckets share the name %s", a.Name)
	}
	if !strings.HasPrefix(a.Endpoint, "http://127.0.0.1:") {
		t.Fatalf("endpoint %s is not on loopback", a.Endpoint)
	}
	c := gw.Client()
	if _, err := c.PutObject(t.Context(), &awss3.PutObjectInput{Bucket: &a.Name, Key: aws.String("k/x"), Body: strings.NewReader("hello")}); err != nil {
		t.Fatalf("put: %v", err)
	}
	out, err := c.ListObjectsV2(t.Context(), &awss3.ListObjectsV2Input{Bucket: &b.Name})
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Contents) != 0 {
		t.Fatalf("a fresh bucket holds %d objects", len(out.Contents))
	}
	if got, err := os.ReadFile(filepath.Join(gw.Dir(), a.Name, "k", "x")); err != nil || string(got) != "hello" {
		t.Fatalf("the object is not in the backend's directory: %q, %v", got, err)
	}
}

// TestBucketRemovedAtEnd: a test's bucket is gone once it ends.
func TestBucketRemovedAtEnd(t *testing.T) {
	var name string
	t.Run("inner", func(t *testing.T) { name = gw.Bucket(t).Name })
	if _, err := gw.Client().HeadBucket(t.Context(), &awss3.HeadBucketInput{Bucket: &name}); err == nil {
		t.Fatalf("the bucket %s of a finished test is still there", name)
	}
	if _, err := os.Stat(filepath.Join(gw.Dir(), name)); !os.IsNotExist(err) {
		t.Fatalf("the bucket's directory remains: %v", err)
	}
}
