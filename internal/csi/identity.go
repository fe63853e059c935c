package csi

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
	"syscall"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// identityServer is the CSI Identity service.
type identityServer struct {
	csi.UnimplementedIdentityServer
	p *Plugin
}

// The keys of the GetPluginInfo manifest, for CSI clients (Paddock's
// volume layer) to tell whether sizes are enforced without importing this
// package.
const (
	ManifestBackend  = "backend"  // "btrfs" or "folders"
	ManifestEnforced = "enforced" // "true" or "false"
	ManifestReason   = "reason"   // why sizes are not enforced; absent when they are
)

func (s *identityServer) GetPluginInfo(ctx context.Context, req *csi.GetPluginInfoRequest) (*csi.GetPluginInfoResponse, error) {
	enforced, reason := s.p.Enforced()
	manifest := map[string]string{
		ManifestBackend:  s.p.be.kind(),
		ManifestEnforced: strconv.FormatBool(enforced),
	}
	if !enforced {
		manifest[ManifestReason] = reason
	}
	return &csi.GetPluginInfoResponse{
		Name:          s.p.cfg.DriverName,
		VendorVersion: s.p.cfg.Version,
		Manifest:      manifest,
	}, nil
}

func (s *identityServer) GetPluginCapabilities(ctx context.Context, req *csi.GetPluginCapabilitiesRequest) (*csi.GetPluginCapabilitiesResponse, error) {
	return &csi.GetPluginCapabilitiesResponse{Capabilities: []*csi.PluginCapability{
		{Type: &csi.PluginCapability_Service_{Service: &csi.PluginCapability_Service{
			Type: csi.PluginCapability_Service_CONTROLLER_SERVICE,
		}}},
		{Type: &csi.PluginCapability_VolumeExpansion_{VolumeExpansion: &csi.PluginCapability_VolumeExpansion{
			Type: csi.PluginCapability_VolumeExpansion_ONLINE,
		}}},
	}}, nil
}

// Probe answers ready once the pool's root can be reached.
func (s *identityServer) Probe(ctx context.Context, req *csi.ProbeRequest) (*csi.ProbeResponse, error) {
	if _, err := s.p.be.free(); err != nil {
		return nil, status.Errorf(codes.FailedPrecondition, "the pool cannot be reached: %v", err)
	}
	return &csi.ProbeResponse{Ready: wrapperspb.Bool(true)}, nil
}

// logCalls logs every call that fails, with its method and code, and the
// others at debug level.
func (p *Plugin) logCalls(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	resp, err := handler(ctx, req)
	if err != nil {
		level := slog.LevelWarn
		if c := status.Code(err); c == codes.Internal || c == codes.Unknown {
			level = slog.LevelError
		}
		p.log.Log(ctx, level, "csi call failed", "method", info.FullMethod, "code", status.Code(err).String(), "err", status.Convert(err).Message())
		return nil, err
	}
	p.log.Debug("csi call", "method", info.FullMethod)
	return resp, nil
}

// toStatus gives an error from below the gRPC layer its gRPC code: a pool
// without room is RESOURCE_EXHAUSTED, a size that can never fit
// OUT_OF_RANGE, anything unexpected INTERNAL.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	var nr *noRoomError
	switch {
	case errors.As(err, &nr) && nr.Alone:
		return status.Error(codes.OutOfRange, nr.Error())
	case errors.As(err, &nr), errors.Is(err, errPoolFull):
		return status.Error(codes.ResourceExhausted, err.Error())
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT):
		return status.Errorf(codes.ResourceExhausted, "%v: %v", err, errPoolFull)
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	}
	return status.Error(codes.Internal, err.Error())
}
