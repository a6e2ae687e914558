"""ros2 launch apo_bringup deploy.launch.py [robot:=sim|real] [model_path:=DIR] [task:=Lift] [record:=true] ...

Builds the launch description from config/deploy.yaml (the same file the `apo deploy` command reads),
so the launch file holds no node list of its own. Every argument of that file is a launch argument.
"""

from launch.actions import DeclareLaunchArgument, OpaqueFunction, Shutdown
from launch_ros.actions import Node

from apo_bringup.graph import default_graph_path, load_graph_file, resolve_graph
from launch import LaunchDescription


def _graph_file(context=None):
    path = context.launch_configurations.get("graph_file") if context else None
    return load_graph_file(path or default_graph_path())


def _nodes(context, *args, **kwargs):
    graph = _graph_file(context)
    overrides = {n: context.launch_configurations[n] for n in graph.arguments if n in context.launch_configurations}
    actions = []
    for spec in resolve_graph(graph, overrides):
        actions.append(Node(
            package=spec.package,
            executable=spec.executable,
            name=spec.name,
            parameters=[spec.parameters],
            remappings=list(spec.remappings.items()),
            output="screen",
            emulate_tty=True,
            on_exit=Shutdown(reason=f"required node {spec.name} exited") if spec.required else None,
        ))
    return actions


def generate_launch_description():
    graph = _graph_file()
    declared = [DeclareLaunchArgument("graph_file", default_value=str(graph.path),
                                      description="Graph file to build the launch description from.")]
    for name, arg in graph.arguments.items():
        declared.append(DeclareLaunchArgument(name, default_value=str(arg.default), description=arg.description))
    return LaunchDescription([*declared, OpaqueFunction(function=_nodes)])
