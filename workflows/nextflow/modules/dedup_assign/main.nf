// nf-core style module: glmkit dedup assign
process GLMKIT_DEDUP_ASSIGN {
    tag "$meta.id"
    label 'process_medium'
    container "${ params.glmkit_container ?: 'glmkit:latest' }"

    input:
    tuple val(meta), path(context), path(centroids), val(shard)

    output:
    tuple val(meta), path("${prefix}.assign.*.d"), emit: share
    path "versions.yml", emit: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def args = task.ext.args ?: ''
    prefix = task.ext.prefix ?: "${meta.id}"
    """
    glmkit dedup assign ${context} -c ${centroids} -o ${prefix}.assign.${shard.replace("/", "-of-")}.d --shard ${shard} --threads ${task.cpus} ${args}

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        glmkit: \$(glmkit --version | sed 's/glmkit, version //')
    END_VERSIONS
    """

    stub:
    prefix = task.ext.prefix ?: "${meta.id}"
    """
    mkdir ${prefix}.assign.${shard.replace("/", "-of-")}.d

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        glmkit: \$(glmkit --version | sed 's/glmkit, version //')
    END_VERSIONS
    """
}
