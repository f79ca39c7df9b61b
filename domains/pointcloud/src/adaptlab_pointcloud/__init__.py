"""adaptlab domain plugin: point clouds. Metadata only: no torch import."""

from adaptlab.plugins.spec import BackboneSpec, DatasetSpec, DomainSpec, package_icon

NUM_POINTS = 256  # per cloud: enough for coarse shape and parts, quick on a CPU

DOMAIN = DomainSpec(
    icon=package_icon(__name__),
    name="pointcloud",
    title="Point clouds",
    description="Classify shapes and segment their parts from meshes, point files and LiDAR "
                "scans, with point networks pre-trained on generated shapes and adapted to "
                "real scans; always beside the control trained on the target alone.",
    tasks=("classification", "segmentation"),
    datasets=(
        DatasetSpec(name="cgal-meshes", task="classification", modality="points",
                    description="scans of 37 real meshes from CGAL's example data (animals, "
                                "human bodies, manufactured objects), 8 scans per mesh with "
                                "occlusion, density fall-off and noise; split by mesh",
                    loader="adaptlab_pointcloud.datasets:cgal_meshes",
                    source_dataset="generated-shapes",
                    defaults={"epochs": 20, "lr": 2e-3, "batch_size": 16}),
        DatasetSpec(name="generated-shapes", task="classification", modality="points",
                    description="600 procedural shapes in the same 3 classes (quadrupeds, "
                                "figures, hands, bones, busts, plates, gears, turned parts, "
                                "brackets, aircraft), one scan each",
                    loader="adaptlab_pointcloud.datasets:generated_shapes",
                    defaults={"epochs": 8, "lr": 2e-3, "batch_size": 32}),
        DatasetSpec(name="generated-parts", task="segmentation", modality="point-segments",
                    description="400 procedural animals and figures with a part label per "
                                "point (body, limb, head, tail)",
                    loader="adaptlab_pointcloud.datasets:generated_parts",
                    defaults={"epochs": 8, "lr": 2e-3, "batch_size": 16}),
    ),
    backbones=(
        BackboneSpec(name="dgcnn", description="small DGCNN (EdgeConv on dynamic k-NN graphs); "
                                               "built in, trained from scratch or from a "
                                               "source run",
                     builder="adaptlab.backbones.point_nets:dgcnn", weights="local-file",
                     params_millions=0.04, input_size=(NUM_POINTS, 3),
                     options={"num_points": NUM_POINTS, "k": 10}),
        BackboneSpec(name="point_transformer",
                     description="small point-patch transformer (Point-MAE family: FPS patch "
                                 "centres, mini-PointNet tokens, 4 blocks); built in",
                     builder="adaptlab.backbones.point_nets:point_transformer",
                     weights="local-file", params_millions=0.41, input_size=(NUM_POINTS, 3),
                     options={"num_points": NUM_POINTS}),
    ),
    default_dataset="cgal-meshes",
    default_backbone="dgcnn",
    default_strategy="full",
    seed_paper=("*Instance-aware Dynamic Prompt Tuning for Pre-trained Point Cloud Models* "
                "(IDPT) adapts a point-patch transformer pre-trained on synthetic shapes to "
                "real scans (ScanObjectNN), whose noise and missing parts break static "
                "prompts, with prompts generated per instance, tuning about 7 % of the "
                "parameters. No pre-trained point model exists offline, so this template "
                "pre-trains the plugin's own small networks on generated shapes with "
                "scan-like occlusion and noise, adapts them to scans of CGAL's real meshes, "
                "and `adaptlab transfer pointcloud` draws the learning curve against the "
                "target-only control; it does not reproduce IDPT's numbers."),
    explain_defaults={"method": "integrated_gradients", "renderer": "points"},
    user_data_loader="adaptlab_pointcloud.readers:read_point_folder",
    data_help="a folder with one subfolder per class of PLY / OFF / OBJ / STL meshes, XYZ / "
              "PTS / NPY point files or LAS / LAZ scans; for part segmentation, files with a "
              "per-point label (a PLY 'label' property, a 4th column, LAS classification)",
)
