# The arcface-rs face service (`arcface serve`), CPU build.
#   docker build -t arcface-serve .
#   docker run -p 50051:50051 -v $PWD/models:/models -v $PWD/data:/data arcface-serve \
#       --model /models/mbf.aq8 --detector-weights /models/scrfd_500m_bnkps.onnx --gallery /data/faces.db
#   (or --detector retinaface --detector-weights /models/retinaface_mnet025.pth for MIT-licensed weights)
# protoc comes from the protoc-bin-vendored crate: no system protobuf compiler is needed.
# Latest stable Rust (the workspace needs 1.92 or newer; some dependencies track recent releases).
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release -p arcface-cli --bin arcface

FROM debian:bookworm-slim
RUN useradd --system --home /data arcface && mkdir -p /data && chown arcface /data
COPY --from=build /src/target/release/arcface /usr/local/bin/arcface
USER arcface
VOLUME ["/data"]
EXPOSE 50051
# SIGTERM (docker stop) shuts down gracefully: requests in flight finish first.
STOPSIGNAL SIGTERM
ENTRYPOINT ["arcface", "serve", "--addr", "0.0.0.0:50051"]
